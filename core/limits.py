"""Rate limits and the AI budget, counted from the database so they hold across restarts and replicas.

* messages per person per minute and AI replies per person per hour: ``check_send`` runs inside
  ``send_message``'s transaction; a send over a limit raises ``RateLimited`` (nothing is stored) saying
  which limit and when the next send can go. Windows slide: the next send is allowed once the oldest
  counted message (or reply) is a full window old.
  An AI reply counts against whoever asked for it: the sender, or the person who pressed Retry
  (``check_retry``); a reply a crash made run again is not a new ask.
* renames per person per hour and channels a person creates per hour: ``check_rename`` and ``check_new_channel``
  run inside the rename's or creation's transaction, counted from ``renames`` and ``channels.created_by``.
  Each rename reruns every open page that shows the person's messages; each channel is a line in everyone's list.
* searches per person per minute: ``check_search`` counts them in this process's memory (per database, per
  person): each replica counts its own, and a restart forgets. Repeating a search already counted in the window
  (the page reruns it on every interaction while the box holds it) is free. A search that asks a paid
  embeddings API for its query's vector leaves a row in the usage ledger, and those rows are counted too, so
  the paid ones hold across restarts and replicas.
* edits, deletes and reactions per person per minute: ``check_action`` runs inside each act's transaction,
  counted from ``message_acts`` (one row per act, no text: a reaction taken back still counted).
* AI tokens per day, for the whole app: ``budget_spent`` is asked before each reply goes to the model and
  before a Retry is queued; a reply past the budget ends at once with that reason. Tokens come from the
  usage ledger (``core.usage``), by the time of each request: the day is the UTC day.

A limit of 0 is off. Nothing here knows who a person is: ``author_id`` is whoever the page says sends.
"""
from __future__ import annotations

import threading
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Hashable

from core import usage
from core.errors import ChatError
from core.store import Database, Transaction

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
ASKS = ("send", "retry")  # ai_jobs.cause values a person caused (a requeue after a crash is the app's)


@dataclass(frozen=True)
class Limits:
    """What one person may send and the app may spend; 0 turns a limit off."""

    messages_per_minute: int = 0
    ai_replies_per_hour: int = 0
    ai_tokens_per_day: int = 0
    renames_per_hour: int = 0
    channels_per_hour: int = 0
    searches_per_minute: int = 0
    attachment_mb_per_day: int = 0
    actions_per_minute: int = 0


class RateLimited(ChatError):
    """A send refused by a limit; ``retry_at`` (naive UTC) is when it can go."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


def wait_words(seconds: float) -> str:
    """'12 s', '3 min', '2 h 5 min': how long until something, rounded up."""
    seconds = max(1, int(seconds + 0.999))
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _newest_times(tx: Transaction, sql: str, params: list[Any], limit: int) -> list[datetime]:
    return [row[0] for row in tx.rows(sql + " ORDER BY 1 DESC LIMIT ?", [*params, limit])]


def check_send(db: Database, tx: Transaction, limits: Limits, author_id: int, wants_reply: bool, now: datetime) -> None:
    """Raise RateLimited when ``author_id`` may not send now (inside the send's transaction)."""
    if not (limits.messages_per_minute or (wants_reply and limits.ai_replies_per_hour)):
        return
    # One person's sends are decided one at a time, also on parallel Postgres writers and replicas.
    tx.one(f"SELECT id FROM users WHERE id = ?{db.dialect.for_update}", [author_id])
    if limits.messages_per_minute:
        times = _newest_times(
            tx, "SELECT created_at FROM messages WHERE author_id = ? AND created_at > ?",
            [author_id, now - MINUTE], limits.messages_per_minute,
        )
        if len(times) >= limits.messages_per_minute:
            retry_at = times[-1] + MINUTE
            raise RateLimited(
                f"You have sent {limits.messages_per_minute} messages in the last minute, the limit. "
                f"You can send again in {wait_words((retry_at - now).total_seconds())}.",
                retry_at,
            )
    if wants_reply and limits.ai_replies_per_hour:
        retry_at = _ai_replies_full(tx, limits, author_id, now)
        if retry_at is not None:
            raise RateLimited(
                f"You asked for {limits.ai_replies_per_hour} AI replies in the last hour, the limit. "
                f"You can send again in {wait_words((retry_at - now).total_seconds())}, or now in a channel "
                "where the AI does not answer this message.",
                retry_at,
            )


def _ai_replies_full(tx: Transaction, limits: Limits, user_id: int, now: datetime) -> datetime | None:
    """When ``user_id`` may ask for the next AI reply, or None when they may now."""
    marks = ", ".join("?" for _ in ASKS)
    times = _newest_times(
        tx, f"SELECT created_at FROM ai_jobs WHERE requested_by = ? AND cause IN ({marks}) AND created_at > ?",
        [user_id, *ASKS, now - HOUR], limits.ai_replies_per_hour,
    )
    return times[-1] + HOUR if len(times) >= limits.ai_replies_per_hour else None


def check_retry(db: Database, tx: Transaction, limits: Limits, user_id: int, now: datetime) -> None:
    """Raise RateLimited when ``user_id`` may not ask for another AI attempt now (a Retry is an ask, like a send)."""
    if not limits.ai_replies_per_hour:
        return
    tx.one(f"SELECT id FROM users WHERE id = ?{db.dialect.for_update}", [user_id])
    retry_at = _ai_replies_full(tx, limits, user_id, now)
    if retry_at is not None:
        raise RateLimited(
            f"You asked for {limits.ai_replies_per_hour} AI replies in the last hour, the limit. "
            f"You can retry in {wait_words((retry_at - now).total_seconds())}.",
            retry_at,
        )


def _window_full(tx: Transaction, sql: str, params: list[Any], limit: int, window: timedelta, now: datetime
                 ) -> datetime | None:
    """When the next one may go, if ``limit`` rows of ``sql`` (created_at column, newer than the window) exist."""
    times = _newest_times(tx, sql, [*params, now - window], limit)
    return times[-1] + window if len(times) >= limit else None


def _check_hourly(db: Database, tx: Transaction, user_id: int, limit: int, sql: str, now: datetime,
                  done: str, again: str) -> None:
    """Raise RateLimited when ``user_id`` has ``limit`` rows of ``sql`` in the last hour (inside the act's transaction;
    the user's row is locked, so two acts at once cannot both pass)."""
    if not limit:
        return
    tx.one(f"SELECT id FROM users WHERE id = ?{db.dialect.for_update}", [user_id])
    retry_at = _window_full(tx, sql, [user_id], limit, HOUR, now)
    if retry_at is not None:
        raise RateLimited(f"You have {done.format(limit=limit)} in the last hour, the limit. "
                          f"You can {again} in {wait_words((retry_at - now).total_seconds())}.", retry_at)


def check_rename(db: Database, tx: Transaction, limits: Limits, user_id: int, now: datetime) -> None:
    """Raise RateLimited when ``user_id`` may not rename themself now (inside the rename's transaction)."""
    _check_hourly(db, tx, user_id, limits.renames_per_hour,
                  "SELECT created_at FROM renames WHERE user_id = ? AND created_at > ?", now,
                  "changed your name {limit} times", "change it again")


def check_new_channel(db: Database, tx: Transaction, limits: Limits, user_id: int, now: datetime) -> None:
    """Raise RateLimited when ``user_id`` may not create a channel now (inside the creation's transaction)."""
    _check_hourly(db, tx, user_id, limits.channels_per_hour,
                  "SELECT created_at FROM channels WHERE created_by = ? AND created_at > ?", now,
                  "created {limit} channels", "create another")


def check_action(db: Database, tx: Transaction, limits: Limits, user_id: int, now: datetime) -> None:
    """Raise RateLimited when ``user_id`` may not edit, delete or react now (inside the act's transaction)."""
    if not limits.actions_per_minute:
        return
    tx.one(f"SELECT id FROM users WHERE id = ?{db.dialect.for_update}", [user_id])
    retry_at = _window_full(tx, "SELECT created_at FROM message_acts WHERE user_id = ? AND created_at > ?", [user_id],
                            limits.actions_per_minute, MINUTE, now)
    if retry_at is not None:
        raise RateLimited(f"You have edited, deleted or reacted {limits.actions_per_minute} times in the last minute, "
                          f"the limit. You can do so again in {wait_words((retry_at - now).total_seconds())}.", retry_at)


# Searches of each person in the last minute, per database, in this process: (time, what was searched).
_searches: "weakref.WeakKeyDictionary[Database, dict[int, deque[tuple[datetime, Hashable]]]]" = (
    weakref.WeakKeyDictionary())
_searches_lock = threading.Lock()


def _repeated(recent: "deque[tuple[datetime, Hashable]]", what: Hashable, now: datetime) -> bool:
    """Drop searches older than a minute; whether ``what`` is among the rest (a rerun of the page, or the same page
    turned back to: free)."""
    while recent and recent[0][0] <= now - MINUTE:
        recent.popleft()
    return any(seen == what for _, seen in recent)


def check_search(db: Database, limits: Limits, user_id: int, what: Hashable, now: datetime, paid: bool = False
                 ) -> None:
    """Count a search by ``user_id`` (``what``: the query and page), or raise RateLimited when over the limit.

    ``paid``: the search will ask a paid embeddings API, so the person's searches in the usage ledger count too.
    """
    limit = limits.searches_per_minute
    if not limit:
        return
    with _searches_lock:
        recent = _searches.setdefault(db, {}).setdefault(user_id, deque())
        if _repeated(recent, what, now):
            return
    # Read outside the lock, so nobody else's search waits on this database read.
    asked = usage.search_times(db, user_id, now - MINUTE, limit) if paid else []
    with _searches_lock:
        if _repeated(recent, what, now):
            return
        waits = [recent[0][0] + MINUTE] if len(recent) >= limit else []
        waits += [asked[-1] + MINUTE] if len(asked) >= limit else []  # newest first: the oldest of the last ``limit``
        if waits:
            retry_at = max(waits)
            raise RateLimited(
                f"You have searched {limit} times in the last minute, the limit. "
                f"You can search again in {wait_words((retry_at - now).total_seconds())}.",
                retry_at,
            )
        recent.append((now, what))


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def tokens_today(db: Database, tx: Transaction | None = None) -> int:
    """AI tokens of every request to the chat model since midnight UTC (reported, or estimated where none was)."""
    return usage.tokens_since(db, day_start(db.clock()), tx=tx)


def budget_spent(db: Database, limits: Limits, tx: Transaction | None = None) -> str | None:
    """Why no AI reply may go to the model now (today's token budget is used up), or None (read in ``tx`` if given)."""
    if not limits.ai_tokens_per_day:
        return None
    used = tokens_today(db, tx)
    if used < limits.ai_tokens_per_day:
        return None
    now = db.clock()
    resume = day_start(now) + timedelta(days=1)
    return (f"Today's AI budget ({limits.ai_tokens_per_day:,} tokens) is spent; AI replies resume at 00:00 UTC "
            f"(in {wait_words((resume - now).total_seconds())}). Press Retry then.")
