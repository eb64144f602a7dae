"""Write-through cache of each channel's newest messages, with a version per channel.

Every open browser asks for its channel's messages every second; this answers in
microseconds without touching the database. The database stays the source of truth: a
channel's list is filled from it on first use, and changes only after a commit succeeded.
Another process's commits (Postgres replicas) arrive as ``invalidate``: the channel's list is
dropped and re-read on next use.
"""
from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

log = logging.getLogger(__name__)

CACHE_DEPTH = 50  # newest messages kept per channel: the page's 10 plus a few pages of "load older"
DIRECTORY = 0  # the version key of the users and channels lists (channel ids start at 1)
EPOCH_SHIFT = 40  # versions are (epoch << 40) + counter: after invalidate_all every version differs

Listener = Callable[[int | None, int], None]


@dataclass(frozen=True)
class Message:
    id: int
    channel_id: int
    author_id: int | None  # None for the AI
    author_name: str | None
    content: str
    status: str  # pending | streaming | complete | error
    error: str | None
    created_at: datetime
    updated_at: datetime | None = None
    stopped: bool = False
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    steps: str | None = None  # JSON: what the AI did before answering (core/tools.py), shown with the reply
    edited_at: datetime | None = None  # the last edit (core/edits.py); earlier texts are in message_revisions
    deleted_at: datetime | None = None  # a tombstone: content is '' and stays so
    deleted_by: int | None = None
    reacted_at: datetime | None = None  # the last change of its reactions
    reactions: str | None = None  # emoji US user id US name, records split by RS, oldest first (core/reactions.py reads it)

    @property
    def is_ai(self) -> bool:
        return self.author_id is None

    @property
    def changed_at(self) -> datetime | None:
        """The last write to the message or its reactions: what orders two states of one row."""
        moments = [t for t in (self.updated_at, self.reacted_at) if t is not None]
        return max(moments) if moments else None


class RecentMessages:
    """Per-channel tuples of the newest messages (newest first) and change versions.

    Writers replace whole tuples under a lock; readers take a reference without locking (a dict
    read is atomic in CPython). A fill that raced with a change is not kept (``fill``'s token).
    """

    def __init__(self) -> None:
        self._lists: dict[int, tuple[Message, ...]] = {}
        self._versions: dict[int, int] = {}
        self._counter = itertools.count(1)
        self._epoch = 0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def get(self, channel_id: int) -> tuple[Message, ...] | None:
        return self._lists.get(channel_id)

    def version(self, channel_id: int) -> int:
        """Changes whenever the channel (or, for DIRECTORY, the users and channels) changed."""
        return (self._epoch << EPOCH_SHIFT) + self._versions.get(channel_id, 0)

    def fill(self, channel_id: int, newest_first: list[Message], token: int | None = None) -> tuple[Message, ...]:
        """Keep a list read from the database, unless the channel changed since ``token = version(channel)``.

        ``token=None``: the caller held every writer off during its read (benchmarks warming the cache).
        """
        with self._lock:
            current = self._lists.get(channel_id)
            if current is not None:
                return current
            rows = tuple(newest_first[:CACHE_DEPTH])
            if token is None or self.version(channel_id) == token:
                self._lists[channel_id] = rows
            return rows

    def add(self, message: Message) -> None:
        with self._lock:
            current = self._lists.get(message.channel_id)
            if current is not None and all(m.id != message.id for m in current):
                # Commits of concurrent writers may report out of order: keep the list ordered by id.
                merged = sorted((message, *current), key=lambda m: m.id, reverse=True)
                self._lists[message.channel_id] = tuple(merged[:CACHE_DEPTH])
            version = self._bump(message.channel_id)
        self._tell(message.channel_id, version)

    def replace(self, message: Message) -> None:
        with self._lock:
            current = self._lists.get(message.channel_id)
            if current is not None:
                self._lists[message.channel_id] = tuple(
                    message if m.id == message.id and not _older(message, m) else m for m in current
                )
            version = self._bump(message.channel_id)
        self._tell(message.channel_id, version)

    def bump(self, channel_id: int) -> None:
        """Mark a change that needs no cached list update (e.g. DIRECTORY)."""
        with self._lock:
            version = self._bump(channel_id)
        self._tell(channel_id, version)

    def invalidate(self, channel_id: int) -> None:
        """Another process changed the channel: drop its list (re-read on next use) and move its version."""
        with self._lock:
            self._lists.pop(channel_id, None)
            version = self._bump(channel_id)
        self._tell(channel_id, version)

    def invalidate_all(self) -> None:
        """Changes may have been missed (a lost listener connection): drop every list, move every version."""
        with self._lock:
            self._lists.clear()
            self._epoch += 1
        self._tell(None, self._epoch << EPOCH_SHIFT)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(channel_id or None, version)`` after every change; returns the unsubscribe function."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return unsubscribe

    def _bump(self, channel_id: int) -> int:
        self._versions[channel_id] = next(self._counter)
        return self.version(channel_id)

    def _tell(self, channel_id: int | None, version: int) -> None:
        for listener in self._listeners:
            try:
                listener(channel_id, version)
            except Exception:  # a listener must not break a writer
                log.exception("change listener failed")


def _older(new: Message, old: Message) -> bool:
    """Whether ``new`` is an earlier state of the row than the cached ``old`` (commits reported out of order)."""
    return new.changed_at is not None and old.changed_at is not None and new.changed_at < old.changed_at
