"""Write-through cache of each channel's newest messages, with a version per channel.

Every open browser asks for its channel's messages every second; this answers in
microseconds without touching DuckDB. DuckDB stays the source of truth: a channel's
list is filled from it on first use, and changes only after a commit succeeded.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime

CACHE_DEPTH = 50  # newest messages kept per channel: the page's 10 plus a few pages of "load older"


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
            self._bump(message.channel_id)

    def replace(self, message: Message) -> None:
        with self._lock:
            current = self._lists.get(message.channel_id)
            if current is not None:
                self._lists[message.channel_id] = tuple(message if m.id == message.id else m for m in current)
            self._bump(message.channel_id)

    def _bump(self, channel_id: int) -> None:
        self._versions[channel_id] = next(self._counter)
