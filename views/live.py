"""Push, not poll: the page's listener that reruns a fragment when the /live route sends a newer stamp.

The listener is a tiny Components v2 element mounted inside a fragment: it keeps one WebSocket per
page to the /live route (views/route.py; its code runs again on every rerun, so the socket lives outside
it, and outlives a remount of the element), and when a stamp differs from what the fragment last drew it
sets a trigger, which reruns only that fragment. It reconnects with back-off; on reconnect the first
message carries every stamp, so the page catches up on anything it missed (the listener's code is
views/live.js). In login mode the page signs a ticket for the signed-in person and the topics it follows.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import streamlit as st

from core import chat, tickets
from core.config import Settings
from core.feed import feed_of
from core.recent import DIRECTORY
from core.store import Database
from views.common import signed_in
from views.route import LIVE_PATH

log = logging.getLogger(__name__)

FRONT_END = Path(__file__).parent  # views/socket.js, live.js, messages.js and input_guard.js


SOCKET_JS = (FRONT_END / "socket.js").read_text()  # the shared connection, put in front of each element's own code
_listener = st.components.v2.component("channel_chat.live", js=SOCKET_JS + (FRONT_END / "live.js").read_text())

# Streamlit's chat input with submit_mode="disable" re-enables when it sees a whole-page run finish after
# the submit. When that finish and a fragment run's (the fallback poll, a push) reach a busy browser
# together, it sees only the fragment's and stays disabled until the next whole-page run, which may
# never come. This guard, mounted outside any fragment, asks for one whole-page run when the box has
# been disabled for a while with no run going and the app connected.
_guard = st.components.v2.component("channel_chat.input_guard", js=(FRONT_END / "input_guard.js").read_text())


def guard_chat_input() -> None:
    """Mount (outside any fragment) the guard that re-enables a chat input Streamlit left disabled."""
    _guard(key="chat-input-guard", data=b"{}", on_stuck_change=_ignore, width="stretch", height="content")


def _ignore() -> None:
    """A trigger needs a callback to be registered; the rerun it causes is all the page needs."""


def listen(key: str, shown: dict[str, str], ticket: str | None = None) -> None:
    """Mount the page's listener: rerun the calling fragment when a topic's stamp differs from ``shown``.

    ``ticket`` (login mode) goes apart from the path: the listener keeps its socket while the page hands it
    newer tickets, and shows the newest when it connects again.
    """
    topics = ",".join(shown)
    data: dict = {"path": f"{LIVE_PATH}?topics={topics}", "shown": shown}
    if ticket is not None:
        data["ticket"] = ticket
    # Sent as bytes: a dict is first checked for data frames, which imports pandas (1.2 s on a fresh server).
    _listener(key=key, data=json.dumps(data).encode(), on_changed_change=_ignore, width="stretch", height="content")


def follow(db: Database, settings: Settings, channel_id: int | None = None, version: int = 0) -> None:
    """Inside a fragment: push-rerun it when the channel moves past ``version``; redraw the whole page
    (the sidebar's lists) when users or channels changed since the sidebar was drawn."""
    follow_directory_changes(db)
    live = subscription(db, settings, channel_id, version)
    if live is not None:
        listen(f"live-{channel_id or 'directory'}", live["shown"], live.get("ticket"))


def follow_directory_changes(db: Database) -> None:
    """Redraw the whole page when users or channels changed since the sidebar was drawn."""
    if st.session_state.get("directory_shown", 0) != chat.directory_version(db):
        st.rerun()


def subscription(db: Database, settings: Settings, channel_id: int | None, version: int = 0,
                 content: bool = False) -> dict | None:
    """What a page's socket follows: {"path", "shown" (topic -> stamp drawn), "ticket" in login mode}; None
    without push, or in login mode with nobody signed in (the fallback check serves). ``content``: the
    channel's changed messages come as content (the message list), not only as stamps."""
    if not settings.live_push:
        return None
    feed = feed_of(db)
    shown = {DIRECTORY: feed.stamp(st.session_state.get("directory_shown", 0))}
    if channel_id is not None:
        # With content the channel goes first: the route sends the first topic's messages.
        shown = {channel_id: feed.stamp(version), **shown} if content else {**shown, channel_id: feed.stamp(version)}
    topics = ",".join(str(topic) for topic in shown)
    live: dict = {"path": f"{LIVE_PATH}?topics={topics}" + ("&content=1" if content and channel_id else ""),
                  "shown": {str(t): v for t, v in shown.items()}}
    if settings.login:
        identity = signed_in()
        if identity is None or not settings.live_secret:
            return None
        live["ticket"] = tickets.sign(settings.live_secret, f"{identity.issuer} {identity.subject}", shown,
                                      tickets.expiry(time.time()))
    return live


def follow_directory(db: Database, settings: Settings) -> None:
    """For pages without a live fragment of their own: a small one that follows the users and channels."""
    st.fragment(follow, run_every=settings.refresh_seconds)(db, settings)


def channel_ticket(settings: Settings, channel_id: int) -> str | None:
    """Login mode: a ticket naming the signed-in person and this channel, which the /files route asks for."""
    if not settings.login or not settings.live_secret:
        return None
    identity = signed_in()
    if identity is None:
        return None
    return tickets.sign(settings.live_secret, f"{identity.issuer} {identity.subject}", [channel_id],
                        tickets.expiry(time.time()))
