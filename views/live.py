"""Push, not poll: a WebSocket route that sends version stamps, and the page's listener that reruns on them.

The route (mounted by app.py's st.App) sends each topic's version stamp when a browser connects and
whenever a commit changes it: version numbers only, never message text. The listener is a tiny
Components v2 element mounted inside a fragment: it keeps one WebSocket per page (its code runs
again on every rerun, so the socket lives outside it, and outlives a remount of the element), and
when a stamp differs from what the fragment last drew it sets a trigger, which reruns only that
fragment. It reconnects with back-off; on reconnect the first message carries every stamp, so the
page catches up on anything it missed.
"""
from __future__ import annotations

import asyncio
import json
import logging

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from core import chat
from core.config import Settings
from core.errors import ChatError
from core.feed import feed_of
from core.recent import DIRECTORY
from core.store import Database
from views.common import open_db  # the pages' own cached database

log = logging.getLogger(__name__)

LIVE_PATH = "/live"  # custom routes ignore server.baseUrlPath: behind a prefix-only proxy the fallback poll serves
MAX_TOPICS = 2  # a page follows its channel and the directory (users and channels lists)
POLICY_VIOLATION = 1008  # WebSocket close codes: refused (bad topics, or not signed in) ...
SERVER_ERROR = 1011  # ... or the database cannot be opened (the listener retries with back-off)

LISTENER_JS = """
const FIRST_RETRY_MS = 250, MAX_RETRY_MS = 8000;  // back-off after a drop: 0.25 s doubling to 8 s
const ASK_AGAIN_MS = 3000;  // a rerun that has not come back by then is asked for again
const LINGER_MS = 2000;  // Streamlit now and then remounts an element during a rerun: the new one adopts the socket
const SENDING = '[data-testid="stChatInputTextArea"]:disabled', SENDING_POLL_MS = 100;
const count = (name) => { window[name] = (window[name] || 0) + 1; };  // for tests, the benchmark and diagnosis

function follow(path) {  // one connection per page and topic set, shared by whichever element shows it
  const live = { path, latest: {}, shown: {}, asking: false, askedAt: 0, asks: 0, failures: 0, holders: 0 };
  live.check = () => {
    clearTimeout(live.again);
    const stale = Object.keys(live.latest).some((t) => live.latest[t] !== live.shown[t]);
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
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = live.socket = new WebSocket(`${scheme}//${location.host}${path}`);
    count("__channelChatSockets");
    socket.onmessage = (event) => {
      live.failures = 0;
      Object.assign(live.latest, JSON.parse(event.data));
      live.check();
    };
    socket.onclose = () => {
      if (live.socket !== socket || live.gone) return;
      live.socket = null;
      const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** live.failures++);
      live.timer = setTimeout(live.connect, delay * (0.75 + Math.random() / 2));  // jitter: no stampede
    };
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

export default function ({ data: bytes, parentElement, setTriggerValue }) {
  // This runs again on every rerun that changes `data`; cleanup runs only on unmount.
  const data = JSON.parse(new TextDecoder().decode(bytes));
  const pages = (window.__channelChatLive = window.__channelChatLive || {});
  let live = parentElement.__channelChatLive;
  if (!live || live.path !== data.path) {
    if (live) live.release();
    live = pages[data.path] = pages[data.path] || follow(data.path);
    clearTimeout(live.lingering);
    live.holders++;
    count("__channelChatMounts");
    parentElement.__channelChatLive = live;
  }
  live.trigger = setTriggerValue;
  live.shown = data.shown;
  live.asking = false;  // the fragment ran: it drew `shown`
  live.check();
  return () => parentElement.__channelChatLive.release();
}
"""

_listener = st.components.v2.component("channel_chat.live", js=LISTENER_JS)

# Streamlit's chat input with submit_mode="disable" re-enables when it sees a whole-page run finish after
# the submit. When that finish and a fragment run's (the fallback poll, a push) reach a busy browser
# together, it sees only the fragment's and stays disabled until the next whole-page run, which may
# never come. This guard, mounted outside any fragment, asks for one whole-page run when the box has
# been disabled for a while with no run going and the app connected.
GUARD_JS = """
const STUCK_MS = 2500, CHECK_MS = 250;
const BOX = '[data-testid="stChatInputTextArea"]';
const BUSY = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stConnectionStatus"]';
export default function ({ setTriggerValue }) {
  const guard = (window.__channelChatGuard = window.__channelChatGuard || { since: 0, asks: 0 });
  guard.trigger = setTriggerValue;
  if (!guard.timer) guard.timer = setInterval(() => {
    const box = document.querySelector(BOX);
    if (!box || !box.disabled || document.querySelector(BUSY)) { guard.since = 0; return; }
    if (!guard.since) guard.since = Date.now();
    if (Date.now() - guard.since < STUCK_MS) return;
    guard.since = 0;
    window.__channelChatUnstuck = (window.__channelChatUnstuck || 0) + 1;  // for tests and diagnosis
    guard.trigger("stuck", ++guard.asks);
  }, CHECK_MS);
  return () => { clearInterval(guard.timer); guard.timer = null; };
}
"""

_guard = st.components.v2.component("channel_chat.input_guard", js=GUARD_JS)


def guard_chat_input() -> None:
    """Mount (outside any fragment) the guard that re-enables a chat input Streamlit left disabled."""
    _guard(key="chat-input-guard", data=b"{}", on_stuck_change=_ignore, width="stretch", height="content")


def _ignore() -> None:
    """A trigger needs a callback to be registered; the rerun it causes is all the page needs."""


def listen(key: str, shown: dict[int, str]) -> None:
    """Mount the page's listener: rerun the calling fragment when a topic's stamp differs from ``shown``."""
    topics = ",".join(str(topic) for topic in shown)
    data = {"path": f"{LIVE_PATH}?topics={topics}", "shown": {str(t): v for t, v in shown.items()}}
    # Sent as bytes: a dict is first checked for data frames, which imports pandas (1.2 s on a fresh server).
    _listener(key=key, data=json.dumps(data).encode(), on_changed_change=_ignore, width="stretch", height="content")


def follow(db: Database, settings: Settings, channel_id: int | None = None, version: int = 0) -> None:
    """Inside a fragment: push-rerun it when the channel moves past ``version``; redraw the whole page
    (the sidebar's lists) when users or channels changed since the sidebar was drawn."""
    drawn = st.session_state.get("directory_shown", 0)
    if drawn != chat.directory_version(db):
        st.rerun()
    if not settings.live_push:
        return
    feed = feed_of(db)
    shown = {DIRECTORY: feed.stamp(drawn)}
    if channel_id is not None:
        shown[channel_id] = feed.stamp(version)
    listen(f"live-{channel_id or 'directory'}", shown)


def follow_directory(db: Database, settings: Settings) -> None:
    """For pages without a live fragment of their own: a small one that follows the users and channels."""
    st.fragment(follow, run_every=settings.refresh_seconds)(db, settings)


# the route ----------------------------------------------------------------------------------------
def may_subscribe(websocket: WebSocket) -> bool:
    """Whether this browser may follow changes. The hook for login mode: answer only valid logins here.

    The route sends version stamps only (no text, no names), so an open app lets anyone follow.
    """
    return True


def _topics(raw: str | None) -> list[int] | None:
    try:
        topics = [int(part) for part in (raw or "").split(",") if part.strip()]
    except ValueError:
        return None
    if not topics or len(topics) > MAX_TOPICS or any(t < 0 for t in topics):
        return None
    return list(dict.fromkeys(topics))


async def live_route(websocket: WebSocket) -> None:
    """WebSocket /live?topics=3,0: send {topic: stamp} for every topic now, then each change as it commits."""
    topics = _topics(websocket.query_params.get("topics"))
    if topics is None or not may_subscribe(websocket):
        await websocket.close(code=POLICY_VIOLATION)
        return
    try:
        db = await run_in_threadpool(open_db)  # opening and migrating the file must not block the loop
    except ChatError as error:
        log.warning("live route: %s", error)
        await websocket.close(code=SERVER_ERROR)
        return
    await websocket.accept()
    feed = feed_of(db)
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    subscription = feed.subscribe(topics, wake=lambda: loop.call_soon_threadsafe(ready.set))
    listening = asyncio.ensure_future(_until_closed(websocket, ready))
    try:
        await websocket.send_text(json.dumps({str(t): feed.current(t) for t in topics}))
        while not listening.done():
            await ready.wait()
            ready.clear()
            changes = subscription.take()
            if any(change.topic is None for change in changes):  # fell behind, or anything may have changed
                stamps = {str(t): feed.current(t) for t in topics}
            else:
                stamps = {str(change.topic): feed.stamp(change.version) for change in changes}
            if stamps:
                await websocket.send_text(json.dumps(stamps))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the browser went away mid-send
    finally:
        subscription.close()
        listening.cancel()


async def _until_closed(websocket: WebSocket, ready: asyncio.Event) -> None:
    """Read (and ignore) what the browser sends until it disconnects, then wake the sender loop."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        ready.set()
