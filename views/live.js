// The page's live listener (views/live.py mounts it inside a fragment), on the socket of views/socket.js:
// it reruns the fragment when a topic it follows moved past what the fragment drew.
export default function ({ data: bytes, parentElement, setTriggerValue }) {
  // This runs again on every rerun that changes `data`; cleanup runs only on unmount.
  const data = JSON.parse(new TextDecoder().decode(bytes));
  const live = hold(parentElement, data.path, data.ticket);
  live.trigger = setTriggerValue;
  live.shown = data.shown;
  live.asking = false;  // the fragment ran: it drew `shown`
  live.check();
  return () => parentElement.__channelChatLive.release();
}
