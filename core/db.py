"""The one place the database is opened, migrated, read and written."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb

from core.errors import ChatError, DatabaseLocked
from core.recent import RecentMessages

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_ATTEMPTS = 6  # a conflict is another writer's commit landing first; a few tries always get through
RETRY_PAUSE = 0.005  # seconds, doubled each try: conflicts clear in milliseconds


def utcnow() -> datetime:
    """Naive UTC now: DuckDB TIMESTAMP columns hold UTC without a zone."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class FairLock:
    """A re-entrant lock granted in arrival order.

    threading.RLock lets the thread that just released it take it again at once, so with 16 busy
    writers one send waited up to 0.9 s (p99); served in turn, the longest wait stays near
    (writers x one write) — measured by bench/hot_query.py.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._owner: int | None = None
        self._depth = 0

    def __enter__(self) -> "FairLock":
        me = threading.get_ident()
        with self._changed:
            if self._owner == me:
                self._depth += 1
                return self
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._changed.wait()
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._changed.notify_all()


class Transaction:
    """A write in progress: execute SQL on its cursor, register work for after the commit."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self._after: list[Callable[[], None]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
        return self.cursor.execute(sql, list(params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.cursor.execute(sql, list(params)).fetchone()

    def on_commit(self, action: Callable[[], None]) -> None:
        self._after.append(action)


class Database:
    """One DuckDB connection per process; every thread reads on its own cursor, writes go through one lock."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str, clock: Callable[[], datetime] = utcnow):
        self.path = path
        self.clock = clock
        self.recent = RecentMessages()
        self._connection = connection
        self._write_lock = FairLock()
        self._jobs = threading.Condition()
        self._closed = False
        self.cursors_opened = 0  # every query starts with a cursor: tests and benchmarks count DuckDB work here

    # reads ---------------------------------------------------------------
    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor for this thread (a cursor costs ~5 µs; sharing one across threads fails)."""
        if self._closed:
            raise ChatError("The database is closed.")
        cur = self._connection.cursor()
        self.cursors_opened += 1
        try:
            yield cur
        finally:
            cur.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        with self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchone()

    # writes --------------------------------------------------------------
    def write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction, retrying DuckDB's write conflicts; then run its on-commit actions."""
        with self._write_lock:
            pause = RETRY_PAUSE
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                with self.cursor() as cur:
                    tx = Transaction(cur)
                    cur.begin()
                    try:
                        result = work(tx)
                        cur.commit()
                    except (duckdb.TransactionException, duckdb.ConstraintException) as error:
                        _rollback(cur)
                        if attempt == WRITE_ATTEMPTS or not _is_conflict(error):
                            raise
                        log.info("write conflict, retry %d: %s", attempt, error)
                        time.sleep(pause)
                        pause *= 2
                        continue
                    except BaseException:
                        _rollback(cur)
                        raise
                for action in tx._after:
                    action()
                return result
        raise AssertionError("unreachable")

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold writers off (used to fill a cache consistently)."""
        with self._write_lock:
            yield

    # job signal ----------------------------------------------------------
    def signal_jobs(self) -> None:
        with self._jobs:
            self._jobs.notify_all()

    def wait_for_jobs(self, timeout: float) -> None:
        with self._jobs:
            self._jobs.wait(timeout)

    def close(self) -> None:
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._connection.close()


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.rollback()
    except duckdb.Error:
        pass  # the transaction was already aborted by DuckDB


def _is_conflict(error: Exception) -> bool:
    """A write conflict, or a unique key DuckDB checks only at COMMIT: both clear when tried again."""
    text = str(error)
    return "onflict" in text or "Duplicate key" in text


def connect(path: str, clock: Callable[[], datetime] = utcnow) -> Database:
    """Open (creating if needed) and migrate the database at ``path``; ``:memory:`` is allowed."""
    from core.migrations import migrate

    try:
        # The app needs no file access beyond its own database: this keeps the SQL console inside it.
        connection = duckdb.connect(path, config={"enable_external_access": False})
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise DatabaseLocked(
                f"Another Channel Chat instance holds the database {path!r}. "
                "Stop it, or point CHAT_DB at another file."
            ) from None
        raise ChatError(f"Cannot open the database {path!r}: {error}") from None
    except duckdb.Error as error:
        raise ChatError(f"Cannot open the database {path!r}: {error}") from None
    # DuckDB's late materialization slows "10 newest of a channel" by 30-50% (measured).
    connection.execute("SET late_materialization_max_rows = 0")
    migrate(connection)
    return Database(connection, path, clock)
