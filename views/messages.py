"""The channel's message list: one component that draws the entries core/listing.py makes, kept live by the socket.

The page mounts it inside its fragment with the messages it read. With push on, the list opens its own
/live socket for this channel (views/socket.js), and each committed change arrives as content: the list
updates itself, no script runs in a watching window. Without a socket (push off, a proxy that blocks
WebSockets, the route's caps) the fragment's fallback check hands it the page again every
REFRESH_SECONDS, so it is correct either way, only later. A person's acts (Stop, Retry, Load older, opening
"Context used") come back as a trigger; the callbacks below ask core, which decides who may. So do Edit, Delete, a
reaction and Regenerate: the list draws them from each entry (edited, deleted, reactions) and the viewer's id.

The sender's own line is drawn by the list the moment Enter is pressed in the chat box, as "sending",
and confirmed in place by the stored message (or marked with why it was refused).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from core import chat, listing, membership, tools
from core.errors import ChatError
from core.recent import Message

FRONT_END = Path(__file__).parent
_list = st.components.v2.component(
    "channel_chat.messages",
    js="".join((FRONT_END / name).read_text() for name in ("socket.js", "message_acts.js", "messages.js")),
    css=(FRONT_END / "messages.css").read_text(),
)
OPENED = "list_contexts_open"  # the replies whose "Context used" this session opened (loaded on demand)
ACTIONS = ("stop", "retry", "older", "context", "edit", "delete", "react", "regenerate")
PAYLOAD = ("text", "emoji")  # what an edit (the new text) or a reaction (the emoji) carries besides the message id


def message_list(db, *, channel_id: int, messages: list[Message], more: bool, image_hosts, viewer: dict[str, Any],
                 live: dict | None, refused: list[dict], error: str | None,
                 act: Callable[[str, int | None, dict], None]) -> None:
    """Mount the list for ``messages`` (newest first, as core lists them).

    ``viewer``: {"id", "name", "all", "admin"} (all: may stop and retry anyone's reply; admin: may delete any
    message); ``live``: the socket's path, stamps and ticket (views/live.py), or None without push;
    ``act(kind, message_id, payload)`` runs a person's act (payload: the edit's "text", the reaction's "emoji").
    """
    key = f"messages-{channel_id}"
    opened = st.session_state.setdefault(OPENED, {})
    data = {
        "channel": channel_id,
        "entries": [listing.entry(db, message, image_hosts) for message in reversed(messages)],
        "more": more,
        "viewer": viewer,
        "live": live,
        "refused": refused,
        "error": error,
        "contexts": {str(mid): context for mid, context in opened.items() if context is not None},
    }
    # Sent as bytes: a dict is first checked for data frames, which imports pandas (1.2 s on a fresh server).
    _list(key=key, data=json.dumps(data).encode(), on_action_change=lambda: _acted(key, act),
          width="stretch", height="content")


def _acted(key: str, act: Callable[[str, int | None, dict], None]) -> None:
    """The trigger's callback: one act, as the list sent it ({"do": ..., "id": ..., and "text" or "emoji"})."""
    value = (st.session_state.get(key) or {}).get("action")
    if not isinstance(value, dict) or value.get("do") not in ACTIONS:
        return
    message_id = value.get("id")
    payload = {name: value[name] for name in PAYLOAD if name in value}  # core checks them: text may be anything
    act(value["do"], message_id if isinstance(message_id, int) and not isinstance(message_id, bool) else None, payload)


def open_context(db, message_id: int, reader: int | None) -> None:
    """Load a finished reply's "Context used" (its steps with their output, then the request sent) for this session,
    if ``reader`` may read its channel (an id from the list, yet a crafted one must not open another channel's)."""
    try:
        message = chat.get_message(db, message_id)
        membership.check_read(db, reader, message.channel_id)
        request = chat.reply_context(db, message_id)
    except ChatError as error:
        st.session_state[OPENED][message_id] = {"error": str(error)}
        return
    steps = [{field: str(step[field]) for field in ("kind", "label", "state", "summary", "error", "tool", "arguments",
                                                     "output") if step.get(field) not in (None, "")}
             for step in tools.steps_of(message) if isinstance(step, dict)]
    st.session_state.setdefault(OPENED, {})[message_id] = {
        "steps": steps, "request": json.dumps(request, indent=2, ensure_ascii=False) if request else None}
