"""The change feed: every committed change, as (topic, version), handed to whoever listens.

A topic is a channel id, or DIRECTORY (0) for the lists of users and channels. The feed rides on
db.recent's version bumps, which follow a commit in this process and, with a shared database, a
commit in another replica: a listener learns of a change without asking the database anything.
Versions restart with the process, so what goes to a browser carries the feed's epoch as well.

A writer only hands its change to the feed (DuckDB reports a commit while its write lock is still
held): the feed's courier thread offers it to each subscription and wakes the listeners, so a
write costs the same with 20 listeners or 20,000, and a slow wake-up never holds the next write.
"""
from __future__ import annotations

import logging
import secrets
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from core.recent import RecentMessages
from core.store import Database

log = logging.getLogger(__name__)
UNREAD_LIMIT = 1000  # changes a listener may leave unread (a minute of 4 writes/s in 4 busy channels);
# beyond that it is told to re-read everything, which costs it one read instead of costing the server memory
COURIER_IDLE_SECONDS = 30.0  # the courier thread ends after this long without news (a quiet or closed feed holds none)


@dataclass(frozen=True)
class Change:
    """``topic`` moved to ``version``; a ``topic`` of None means: anything may have changed, re-read all."""

    topic: int | None
    version: int | None


REREAD = Change(None, None)


class Subscription:
    """One listener's queue of unread changes; ``wake`` is called when the queue stops being empty."""

    def __init__(self, feed: "ChangeFeed", topics: frozenset[int] | None, wake: Callable[[], None] | None,
                 limit: int) -> None:
        self.topics = topics
        self._feed, self._wake, self._limit = feed, wake, limit
        self._unread: deque[Change] = deque()
        self._ready = threading.Condition(threading.Lock())
        self.closed = False

    def take(self) -> list[Change]:
        """The unread changes, oldest first (empty if none)."""
        with self._ready:
            changes = list(self._unread)
            self._unread.clear()
        return changes

    def wait(self, timeout: float) -> list[Change]:
        """Like take(), but waits up to ``timeout`` seconds for a first change (for threads and tests)."""
        with self._ready:
            self._ready.wait_for(lambda: self._unread or self.closed, timeout)
        return self.take()

    def close(self) -> None:
        self._feed._drop(self)
        with self._ready:
            self.closed = True
            self._ready.notify_all()

    def _offer(self, change: Change) -> bool:
        """Queue a change; True if the queue was empty (the listener must be woken)."""
        if self.closed:
            return False
        if change.topic is not None and self.topics is not None and change.topic not in self.topics:
            return False
        with self._ready:
            was_empty = not self._unread
            if self._unread and self._unread[-1] is REREAD:
                return False  # already told to re-read everything: that covers this change too
            if len(self._unread) >= self._limit or change is REREAD:
                self._unread.clear()
                self._unread.append(REREAD)
            else:
                self._unread.append(change)
            self._ready.notify_all()
        return was_empty


class ChangeFeed:
    """Fans db.recent's bumps out to subscriptions: each change once, in order per topic."""

    def __init__(self, recent: RecentMessages) -> None:
        self.recent = recent
        self.epoch = secrets.token_hex(4)  # tells a browser that versions restarted with a new process
        self._lock = threading.Lock()
        self._news = threading.Condition(self._lock)  # the courier waits on it for changes to hand out
        self._subscriptions: tuple[Subscription, ...] = ()
        self._delivered: dict[int, int] = {}  # topic -> newest version handed out
        # Changes waiting for the courier, each with the subscriptions that existed at its commit.
        self._pending: deque[tuple[Change, tuple[Subscription, ...]]] = deque()
        self._handing = 0  # changes taken by the courier and not yet handed out
        self._courier: threading.Thread | None = None
        self._unsubscribe = recent.subscribe(self._on_change)

    def stamp(self, version: int) -> str:
        """A version as a browser sees it: equal stamps mean nothing changed, whatever the process."""
        return f"{self.epoch}.{version}"

    def current(self, topic: int) -> str:
        """The stamp of ``topic``'s version right now."""
        return self.stamp(self.recent.version(topic))

    def subscribe(self, topics: Iterable[int] | None = None, wake: Callable[[], None] | None = None,
                  limit: int = UNREAD_LIMIT) -> Subscription:
        """Start listening to ``topics`` (None: all); ``wake()`` must be quick and thread-safe."""
        subscription = Subscription(self, None if topics is None else frozenset(topics), wake, limit)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    @property
    def listeners(self) -> int:
        return len(self._subscriptions)

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until every change made so far has been handed out (for tests and benchmarks); False if not in time."""
        with self._news:
            return self._news.wait_for(lambda: not self._pending and not self._handing, timeout)

    def close(self) -> None:
        self._unsubscribe()
        for subscription in self._subscriptions:
            subscription.close()

    def _drop(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def _on_change(self, topic: int | None, version: int) -> None:
        """From the writer (perhaps inside its database's write lock): queue the change for the courier, no more."""
        with self._news:  # one change at a time, so every subscription sees a topic's versions in order
            if topic is None:
                change = REREAD
            elif version <= self._delivered.get(topic, 0):
                return  # a bump that lost a race with a newer one: the newer version already covers it
            else:
                self._delivered[topic] = version
                change = Change(topic, version)
            if not self._subscriptions:
                return
            if len(self._pending) >= UNREAD_LIMIT:  # the courier fell behind: everyone re-reads once instead
                self._pending.clear()
                change = REREAD
            self._pending.append((change, self._subscriptions))
            if self._courier is None:
                self._courier = threading.Thread(target=self._deliver, name="change-feed", daemon=True)
                self._courier.start()
            self._news.notify_all()

    def _deliver(self) -> None:
        """The courier: offer queued changes to their subscriptions, then wake those that have news."""
        while True:
            with self._news:
                if not self._pending:
                    self._news.wait(COURIER_IDLE_SECONDS)
                if not self._pending:
                    self._courier = None  # the next change starts a new courier
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._handing = len(batch)
            woken: dict[int, Subscription] = {}
            for change, subscriptions in batch:
                for subscription in subscriptions:
                    if subscription._offer(change) and subscription._wake is not None:
                        woken[id(subscription)] = subscription
            for subscription in woken.values():
                try:
                    subscription._wake()
                except Exception:  # e.g. its event loop already closed: that listener is gone, the others are not
                    log.exception("waking a change-feed listener failed")
                    subscription.close()
            with self._news:
                self._handing = 0
                self._news.notify_all()


_feeds: "weakref.WeakKeyDictionary[Database, ChangeFeed]" = weakref.WeakKeyDictionary()
_feeds_lock = threading.Lock()


def feed_of(db: Database) -> ChangeFeed:
    """The database's one change feed, started on first use."""
    with _feeds_lock:
        feed = _feeds.get(db)
        if feed is None:
            feed = _feeds[db] = ChangeFeed(db.recent)
        return feed
