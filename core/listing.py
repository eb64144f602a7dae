"""What a reader's message list receives for each message: one entry, rendered once, shared by every window.

An entry is plain data (numbers, strings, lists) that the page's list draws without reading any of
it as markup except ``html``, which core/render.py made and sanitized. Each entry carries its message's
``version`` (the last write's time in microseconds): a list keeps, per message id, the entry with the
highest version, so a page's own read and a pushed change can arrive in any order.

``Sent`` is one window's memory of what it was given: ``changes`` hands out only the entries whose
message changed since, so a push carries the few messages a commit touched, not the whole page.
"""
from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Collection, Iterable

from core import replies, tools
from core.errors import ChatError
from core.recent import Message
from core.render import message_html
from core.store import Database

log = logging.getLogger(__name__)

ENTRY_CACHE = 2048  # entries kept (a streaming reply makes a new one per write; every window shares it)
STEP_FIELDS = ("kind", "label", "state", "summary", "error")  # what a list shows of a step; tool output is on demand


def micros(moment: datetime | None) -> int:
    """A stored naive-UTC time as microseconds since 1970 (0 for none)."""
    if moment is None:
        return 0
    return int(moment.replace(tzinfo=timezone.utc).timestamp() * 1_000_000)


def entry(db: Database, message: Message, image_hosts: Collection[str] = ()) -> dict[str, Any]:
    """The list's entry for ``message``: rendered once per version, and for a reply, who asked for it."""
    item = _drawn(message, frozenset(image_hosts))
    if message.is_ai:
        item = {**item, "asked_by": _asked_by(db, message)}
    return item


@functools.lru_cache(maxsize=ENTRY_CACHE)
def _drawn(message: Message, image_hosts: frozenset[str]) -> dict[str, Any]:
    """Everything of an entry that the message itself decides (shared by every database and window)."""
    steps = [{field: str(step[field]) for field in STEP_FIELDS if step.get(field) not in (None, "")}
             for step in tools.steps_of(message) if isinstance(step, dict)]
    item: dict[str, Any] = {
        "id": message.id,
        "version": micros(message.updated_at or message.created_at),
        "author": "AI" if message.is_ai else message.author_name or "Unknown user",
        "author_id": message.author_id,
        "ai": message.is_ai,
        "at": micros(message.created_at) // 1000,  # milliseconds, for the reader's clock
        "status": message.status,
        "html": message_html(message.content, image_hosts) if message.content else "",
        "steps": steps,
        "error": (message.error or "The reply failed.") if message.status == "error" else None,
        "stopped": message.stopped,
    }
    if message.is_ai:
        item["has_context"] = message.status not in replies.OPEN and bool(message.steps or message.prompt_tokens)
        if message.prompt_tokens is not None:
            item["tokens"] = [message.prompt_tokens, message.completion_tokens]
    return item


_askers: "weakref.WeakKeyDictionary[Database, OrderedDict[Message, list[int]]]" = weakref.WeakKeyDictionary()
_askers_lock = threading.Lock()


def _asked_by(db: Database, message: Message) -> list[int]:
    """Who may stop or retry a reply besides admins (core decides again when a button is pressed), read
    once per reply version per database: a write reaches every window, and they share this read."""
    with _askers_lock:
        known = _askers.setdefault(db, OrderedDict())
        if message in known:
            return known[message]
    try:
        who = sorted(replies.asked_by(db, message.id))
    except ChatError as error:  # a database hiccup must not cost the whole list: the buttons wait for the next version
        log.warning("who asked for reply %s is unknown for now: %s", message.id, error)
        return []
    with _askers_lock:
        known[message] = who
        while len(known) > ENTRY_CACHE:
            known.popitem(last=False)
    return who


class Sent:
    """What one window has been given, by message id: the next ``changes`` are only what is new to it."""

    def __init__(self) -> None:
        self._given: dict[int, Message] = {}

    def changes(self, db: Database, messages: Iterable[Message], image_hosts: Collection[str] = ()) -> list[dict]:
        """Entries of ``messages`` this window has not seen in this version, oldest first."""
        fresh = []
        for message in messages:
            if self._given.get(message.id) != message:
                self._given[message.id] = message
                fresh.append(entry(db, message, image_hosts))
        fresh.sort(key=lambda item: item["id"])
        return fresh
