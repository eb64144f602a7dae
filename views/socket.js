// One WebSocket to /live per page and topic set, shared by whichever element shows it (views/live.py puts this
// file in front of live.js and messages.js). It is kept outside the element: an element's code runs again on
// every rerun, and Streamlit may remount it. When a pushed stamp of a watched topic differs from what the
// fragment drew, it sets the holder's trigger, which reruns only that fragment; content frames (the message
// list's) go to the holder's onContent.

// Close codes of the /live route: the same numbers as views/live.py (tests/test_live_page.py checks they agree).
const NOT_ADMITTED = 4401;  // login mode: no ticket, or one that no longer admits: try again with the page's next one
const TOO_MANY = 4429;  // the server's socket caps are reached: wait long; the page's fallback check keeps it current
const FIRST_RETRY_MS = 250, MAX_RETRY_MS = 8000;  // back-off after a drop: 0.25 s doubling to 8 s
const BUSY_RETRY_MS = 30000, MAX_BUSY_RETRY_MS = 300000;  // after TOO_MANY: 30 s doubling to 5 min
const ASK_AGAIN_MS = 3000;  // a rerun that has not come back by then is asked for again
const LINGER_MS = 2000;  // Streamlit now and then remounts an element during a rerun: the new one adopts the socket
const SENDING = '[data-testid="stChatInputTextArea"]:disabled', SENDING_POLL_MS = 100;
const count = (name) => { window[name] = (window[name] || 0) + 1; };  // for tests, the benchmark and diagnosis

function follow(path, ticket) {
  const live = { path, ticket, latest: {}, shown: {}, asking: false, askedAt: 0, asks: 0, failures: 0, busy: 0,
                 holders: 0, refused: null, waiting: false, watch: null, onContent: null };
  live.check = () => {
    clearTimeout(live.again);
    const watched = live.watch || Object.keys(live.latest);  // the message list draws its channel itself
    const stale = watched.some((t) => t in live.latest && live.latest[t] !== live.shown[t]);
    if (!stale) return;
    // A message just typed is on its way (the box stays disabled until its run ends): a rerun asked
    // for now would stop that run and leave the box disabled. Ask once it is over.
    if (document.querySelector(SENDING)) { if (!live.gone) live.again = setTimeout(live.check, SENDING_POLL_MS); return; }
    // One rerun at a time: it reads the newest version anyway, and changes that arrive meanwhile
    // are caught by the next one. A request can be lost (folded into a page rerun that began
    // before the change): until the page shows what was pushed, ask again now and then.
    if (!live.asking || Date.now() - live.askedAt >= ASK_AGAIN_MS) {
      live.asking = true; live.askedAt = Date.now();
      count("__channelChatReruns");
      live.trigger("changed", ++live.asks);  // a new value each time: an event, never deduplicated
    }
    if (!live.gone) live.again = setTimeout(live.check, live.askedAt + ASK_AGAIN_MS - Date.now());
  };
  live.connect = () => {
    live.timer = null;
    live.waiting = false;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ticket = live.ticket;  // login mode: the page's signed note of who may follow these topics
    const query = ticket ? `&ticket=${encodeURIComponent(ticket)}` : "";
    const socket = live.socket = new WebSocket(`${scheme}//${location.host}${path}${query}`);
    count("__channelChatSockets");
    socket.onmessage = (event) => {
      count("__channelChatPushes");
      live.failures = 0; live.busy = 0;
      let frame = JSON.parse(event.data);
      if (frame.messages) {  // content: the channel's changed messages, with the stamps they bring
        count("__channelChatContent");
        if (live.onContent) live.onContent(frame);
        frame = frame.stamps || {};
      }
      Object.assign(live.latest, frame);
      live.check();
    };
    socket.onclose = (event) => {
      if (live.socket !== socket || live.gone) return;
      live.socket = null;
      window.__channelChatClosed = event.code;  // for tests and diagnosis
      if (event.code === NOT_ADMITTED) {  // the same ticket will not admit again: wait for a newer one
        live.refused = ticket;
        live.waiting = true;
        live.admit(live.ticket);
      } else if (event.code === TOO_MANY) {
        live.retry(Math.min(MAX_BUSY_RETRY_MS, BUSY_RETRY_MS * 2 ** live.busy++));
      } else {
        live.retry(Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** live.failures++));
      }
    };
  };
  live.retry = (delay) => {
    live.timer = setTimeout(live.connect, delay * (0.75 + Math.random() / 2));  // jitter: no stampede
  };
  live.admit = (newest) => {  // the page handed its newest ticket: a listener that was turned away tries it
    live.ticket = newest;
    if (live.waiting && !live.gone && newest && newest !== live.refused) {
      live.waiting = false;
      live.retry(FIRST_RETRY_MS);
    }
  };
  live.release = () => {
    if (--live.holders > 0) return;
    live.lingering = setTimeout(() => {
      live.gone = true;
      clearTimeout(live.timer);
      clearTimeout(live.again);
      if (live.socket) live.socket.close();
      delete window.__channelChatLive[path];
    }, LINGER_MS);
  };
  live.connect();
  return live;
}

function hold(parentElement, path, ticket) {  // the page's connection for `path`, adopted by this element
  const pages = (window.__channelChatLive = window.__channelChatLive || {});
  let live = parentElement.__channelChatLive;
  if (!live || live.path !== path) {
    if (live) live.release();
    live = pages[path] = pages[path] || follow(path, ticket);
    clearTimeout(live.lingering);
    live.holders++;
    count("__channelChatMounts");
    parentElement.__channelChatLive = live;
  }
  live.admit(ticket);
  return live;
}
