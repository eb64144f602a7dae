"""What a reader's message list receives for each message: one entry, rendered once, shared by every window.

An entry is plain data (numbers, strings, lists) that the page's list draws without reading any of
it as markup except ``html``, which core/render.py made and sanitized. Each entry carries its message's
``version`` (the last write's time in microseconds): a list keeps, per message id, the entry with the
highest version, so a page's own read and a pushed change can arrive in any order.

A ``Snapshot`` is a channel's newest entries at one version, serialized once and shared by every socket
of the channel; ``Sent`` is one window's memory of what it was given, so a push carries only the few
messages a commit touched, not the whole page.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection

from core import attachments, chat, jobs, reactions, replies, tools
from core.errors import ChatError
from core.recent import CACHE_DEPTH, Message
from core.render import message_html
from core.store import Database

log = logging.getLogger(__name__)

ASKERS_SECONDS = 2.0  # how stale "who asked" may be when a Retry's pending version was not seen (a replica)
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
    if message.is_ai and message.deleted_at is None:
        who, ask = _asked_by(db, message)
        item = {**item, "asked_by": who, "trigger": ask[0] if ask else None,
                "asked_at": micros(ask[1]) // 1000 if ask else 0}
    elif not message.is_ai and message.deleted_at is None and (files := _files_of(db, message.id)):
        item = {**item, "files": files}
    return item


_files: "weakref.WeakKeyDictionary[Database, OrderedDict[int, list[dict[str, Any]]]]" = weakref.WeakKeyDictionary()
_files_lock = threading.Lock()


def _files_of(db: Database, message_id: int) -> list[dict[str, Any]]:
    """A person's message's files as the list draws them (read once: files never change under a message)."""
    with _files_lock:
        known = _files.setdefault(db, OrderedDict())
        if message_id in known:
            known.move_to_end(message_id)
            return known[message_id]
    try:
        found = attachments.of_messages(db, [message_id]).get(message_id, [])
    except ChatError as error:  # as for who asked: the list goes on, the files come with the next version
        log.warning("the files of message %s are unknown for now: %s", message_id, error)
        return []
    drawn = [{"id": a.id, "kind": a.kind, "name": a.name, "size": a.size, "media_type": a.media_type,
              "width": a.width, "height": a.height} for a in found]
    with _files_lock:
        known[message_id] = drawn
        while len(known) > ENTRY_CACHE:
            known.popitem(last=False)
    return drawn


@functools.lru_cache(maxsize=ENTRY_CACHE)
def _drawn(message: Message, image_hosts: frozenset[str]) -> dict[str, Any]:
    """Everything of an entry that the message itself decides (shared by every database and window)."""
    steps = [{field: str(step[field]) for field in STEP_FIELDS if step.get(field) not in (None, "")}
             for step in tools.steps_of(message) if isinstance(step, dict)]
    item: dict[str, Any] = {
        "id": message.id,
        "version": micros(message.changed_at or message.created_at),
        "author": "AI" if message.is_ai else message.author_name or "Unknown user",
        "author_id": message.author_id,
        "ai": message.is_ai,
        "at": micros(message.created_at) // 1000,  # milliseconds, for the reader's clock
        "status": message.status,
        "html": message_html(message.content, image_hosts) if message.content else "",
        "text": "" if message.is_ai else message.content,  # what its author's Edit box starts from
        "steps": steps,
        "error": (message.error or "The reply failed.") if message.status == "error" else None,
        "stopped": message.stopped,
        "edited": micros(message.edited_at) // 1000 if message.edited_at else None,  # ms, for "(edited)" and its time
        "deleted": message.deleted_at is not None,
        "reactions": reactions.parse(message.reactions),  # who reacted: each viewer's list finds itself in "by"
    }
    if message.is_ai:
        item["has_context"] = message.status not in jobs.OPEN and bool(message.steps or message.prompt_tokens)
        if message.prompt_tokens is not None:
            item["tokens"] = [message.prompt_tokens, message.completion_tokens]
    return item


Asked = tuple[list[int], "tuple | None"]  # who asked for a reply, and (the message it answers, when asked)
_askers: "weakref.WeakKeyDictionary[Database, OrderedDict[int, tuple[float, Asked]]]" = weakref.WeakKeyDictionary()
_askers_lock = threading.Lock()


def _asked_by(db: Database, message: Message) -> Asked:
    """Who may stop or retry a reply besides admins (core decides again when a button is pressed), and the message
    (message it answers, when its latest attempt was asked): the list offers Regenerate once that message is edited after.

    It changes only when an attempt starts (a Retry or a requeue sets the reply back to pending): a pending
    version is read afresh, and any other is answered from a read at most ASKERS_SECONDS old, so a streaming
    reply costs a read every few seconds, not one per write: {reply id: (read at, (who, (trigger, asked at)))}.
    """
    now = time.monotonic()
    with _askers_lock:
        known = _askers.setdefault(db, OrderedDict())
        cached = known.get(message.id)
        if cached is not None and message.status != "pending" and now - cached[0] < ASKERS_SECONDS:
            return cached[1]
    try:
        who = (sorted(replies.asked_by(db, message.id)), replies.latest_ask(db, message.id))
    except ChatError as error:  # a database hiccup must not cost the whole list: the buttons wait for the next version
        log.warning("who asked for reply %s is unknown for now: %s", message.id, error)
        return [], None
    with _askers_lock:
        known[message.id] = (now, who)
        known.move_to_end(message.id)
        while len(known) > ENTRY_CACHE:
            known.popitem(last=False)
    return who


@dataclass(frozen=True)
class Snapshot:
    """A channel's newest entries at one version, each serialized once: every socket of the channel shares it."""

    channel_id: int
    version: int
    entries: tuple[tuple[int, str], ...]  # (message id, entry as JSON), oldest first


_snapshots: "weakref.WeakKeyDictionary[Database, dict[int, Snapshot]]" = weakref.WeakKeyDictionary()
_snapshots_lock = threading.Lock()


def cached_snapshot(db: Database, channel_id: int, version: int) -> Snapshot | None:
    """The channel's snapshot at ``version`` if one was made (no database read: safe on an event loop)."""
    found = _snapshots.get(db, {}).get(channel_id)
    return found if found is not None and found.version == version else None


def snapshot(db: Database, channel_id: int, image_hosts: Collection[str] = ()) -> Snapshot:
    """Read the channel's newest CACHE_DEPTH messages (through the cache) as entries, and keep them for the
    other sockets. The version is read first: a change that lands during the read makes a newer one."""
    version = db.recent.version(channel_id)
    messages = chat.list_messages(db, channel_id, limit=CACHE_DEPTH)
    made = Snapshot(channel_id, version, tuple(
        (message.id, json.dumps(entry(db, message, image_hosts), ensure_ascii=False))
        for message in sorted(messages, key=lambda m: m.id)))
    with _snapshots_lock:
        kept = _snapshots.setdefault(db, {})
        if channel_id not in kept or kept[channel_id].version <= version:
            kept[channel_id] = made
    return made


class Sent:
    """What one window has been given, by message id: the next frame carries only what is new to it."""

    def __init__(self) -> None:
        self._given: dict[int, str] = {}

    def changed(self, snap: Snapshot) -> list[str]:
        """The entries (as JSON) of ``snap`` this window has not been given in this version, oldest first."""
        fresh = []
        for message_id, text in snap.entries:
            given = self._given.get(message_id)
            if given is not text and given != text:
                self._given[message_id] = text
                fresh.append(text)
        return fresh
