// Streamlit's chat input with submit_mode="disable" can stay disabled when a whole-page run and a fragment run
// finish together in a busy browser (views/live.py says more): when the box has been disabled for a while with no
// run going and the app connected, ask for one whole-page run.
const STUCK_MS = 2500, CHECK_MS = 250;
const BOX = '[data-testid="stChatInputTextArea"]';
const BUSY = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stConnectionStatus"]';
export default function ({ setTriggerValue }) {
  const guard = (window.__channelChatGuard = window.__channelChatGuard || { since: 0, asks: 0 });
  guard.trigger = setTriggerValue;
  if (!guard.timer) guard.timer = setInterval(() => {
    const box = document.querySelector(BOX);
    if (!box || !box.disabled) { guard.since = 0; return; }
    if (!guard.since) guard.since = Date.now();
    // Time disabled counts across runs: on a slow page the 1 s poll's fragment runs follow one another, and a
    // clock that restarted with each of them never reached STUCK_MS (the box stayed disabled for good).
    if (Date.now() - guard.since < STUCK_MS || document.querySelector(BUSY)) return;
    guard.since = 0;
    window.__channelChatUnstuck = (window.__channelChatUnstuck || 0) + 1;  // for tests and diagnosis
    guard.trigger("stuck", ++guard.asks);
  }, CHECK_MS);
  return () => { clearInterval(guard.timer); guard.timer = null; };
}
