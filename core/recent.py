"""Write-through cache of each channel's newest messages, with a version per channel.

Every open browser asks for its channel's messages every second; this answers in
microseconds without touching DuckDB. DuckDB stays the source of truth: a channel's
list is filled from it on first use, and changes only after a commit succeeded.
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
DIRECTORY = 0  # the version "channel" that moves when users or channels change (no channel has id 0)


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

    @property
    def is_ai(self) -> bool:
        return self.author_id is None


class RecentMessages:
    """Per-channel tuples of the newest messages (newest first) and change versions.

    Writers replace whole tuples under the database's write lock; readers take a
    reference without locking (a dict read is atomic in CPython).
    """

    def __init__(self) -> None:
        self._lists: dict[int, tuple[Message, ...]] = {}
        self._versions: dict[int, int] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._subscribers: tuple[Callable[[int | None, int], None], ...] = ()

    def get(self, channel_id: int) -> tuple[Message, ...] | None:
        return self._lists.get(channel_id)

    def version(self, channel_id: int) -> int:
        return self._versions.get(channel_id, 0)

    def fill(self, channel_id: int, newest_first: list[Message]) -> tuple[Message, ...]:
        with self._lock:
            current = self._lists.get(channel_id)
            if current is None:
                current = self._lists[channel_id] = tuple(newest_first[:CACHE_DEPTH])
            return current

    def add(self, message: Message) -> None:
        with self._lock:
            current = self._lists.get(message.channel_id)
            if current is not None:
                self._lists[message.channel_id] = (message, *current[: CACHE_DEPTH - 1])
            version = self._bump(message.channel_id)
        self._notify(message.channel_id, version)

    def replace(self, message: Message) -> None:
        with self._lock:
            current = self._lists.get(message.channel_id)
            if current is not None:
                self._lists[message.channel_id] = tuple(message if m.id == message.id else m for m in current)
            version = self._bump(message.channel_id)
        self._notify(message.channel_id, version)

    def touch(self, channel_id: int) -> None:
        """Say that ``channel_id`` (or DIRECTORY) changed without a cached message changing."""
        with self._lock:
            version = self._bump(channel_id)
        self._notify(channel_id, version)

    def subscribe(self, callback: Callable[[int | None, int], None]) -> Callable[[], None]:
        """Call ``callback(channel_id, version)`` after every bump, from the bumping thread; returns unsubscribe."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def _bump(self, channel_id: int) -> int:
        version = self._versions[channel_id] = next(self._counter)
        return version

    def _notify(self, channel_id: int | None, version: int) -> None:
        for callback in self._subscribers:
            try:
                callback(channel_id, version)
            except Exception:  # a listener's fault must not undo a commit that already happened
                log.exception("recent-change subscriber failed")
