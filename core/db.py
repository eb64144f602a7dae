"""The one place the database is opened, migrated, read and written.

``connect(target)`` opens a DuckDB file (or ``:memory:``) or, given a ``postgresql://`` URL, a
Postgres database (``core.pg``). Both are a ``Database``: the verbs call ``rows``/``one``/``write``
with ``?`` placeholders and never ask which backend they run on. What differs between the two
(placeholders, DDL, how a job row is claimed, how other processes learn of a change) lives in the
backend and its ``Dialect``, as Django's database backends do.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb

from core.errors import ChatError, DatabaseLocked
from core.recent import DIRECTORY, RecentMessages

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_ATTEMPTS = 6  # a conflict is another writer's commit landing first; a few tries always get through
RETRY_PAUSE = 0.005  # seconds, doubled each try: conflicts clear in milliseconds


def utcnow() -> datetime:
    """Naive UTC now: TIMESTAMP columns hold UTC without a zone on both backends."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` names a Postgres database rather than a DuckDB file."""
    return target.startswith(("postgresql://", "postgres://"))


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


class Dialect:
    """The SQL that differs between backends; the verbs read these, never the backend's name."""

    name = "?"  # for tests, benchmarks and messages only
    double = "DOUBLE"  # a float column in DDL
    for_update = ""  # appended to a read inside a write that must lock the rows it reads
    skip_locked = ""  # appended to a claim: take a row no other replica holds
    vector = "FLOAT[256]"  # a message's embedding (core.embeddings.DIMENSIONS wide)
    text_search_ddl: tuple[str, ...] = ()  # what makes search's substring matching fast, run by migration 006

    def contains(self, column: str) -> str:
        """SQL true when ``column`` holds the text bound to its one ``?``, ignoring case; nothing in it is a wildcard."""
        return f"strpos(lower({column}), lower(CAST(? AS VARCHAR))) > 0"


class DuckDialect(Dialect):
    name = "duckdb"
    # One process owns a DuckDB file and its writes go through one lock: no row locks are needed.
    # Search scans the text (strpos over lower()): DuckDB's fts extension measured slower per query
    # (110-730 ms against 70-190 ms at 1M messages) and its index is rebuilt, not updated (bench/search.py).


class Transaction:
    """A write in progress: execute SQL, say what changed, register work for after the commit."""

    def __init__(self, cursor: Any, translate: Callable[[str], str] = lambda sql: sql) -> None:
        self.cursor = cursor
        self._translate = translate
        self._after: list[Callable[[], None]] = []
        self.channels: set[int] = set()
        self.jobs = False
        self.directory = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(self._translate(sql), list(params))
        return self.cursor

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def on_commit(self, action: Callable[[], None]) -> None:
        self._after.append(action)

    def announce(self, channel_id: int | None = None, jobs: bool = False, directory: bool = False) -> None:
        """Say what this write changes, so every process (replica) learns of it at commit."""
        if channel_id is not None:
            self.channels.add(int(channel_id))
        self.jobs = self.jobs or jobs
        self.directory = self.directory or directory


class Database:
    """What every backend offers the verbs: reads, one-transaction writes, the recent cache, job signals."""

    dialect: Dialect = Dialect()
    shared = False  # whether other processes may write the same database (then leases decide who runs a job)

    def __init__(self, target: str, clock: Callable[[], datetime] = utcnow) -> None:
        self.path = target
        self.clock = clock
        self.recent = RecentMessages()
        self._jobs = threading.Condition()
        self._closed = False
        self.cursors_opened = 0  # every query starts here: tests and benchmarks count database work

    def describe(self) -> str:
        """The database named for a person: a file path, or host/database without any password."""
        return self.path

    # reads ---------------------------------------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        raise NotImplementedError

    @contextmanager
    def analytics(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB cursor whose current database and schema hold the app's tables (read-only where it can be)."""
        raise NotImplementedError
        yield  # pragma: no cover

    # writes --------------------------------------------------------------
    def write(self, work: Callable[[Transaction], T]) -> T:
        raise NotImplementedError

    def _committed(self, tx: Transaction) -> None:
        """After a commit: this process's own side of ``announce``, then the verb's on-commit actions."""
        for action in tx._after:
            action()
        if tx.directory:
            self.recent.bump(DIRECTORY)
        if tx.jobs:
            self.signal_jobs()

    # job signal ----------------------------------------------------------
    def signal_jobs(self) -> None:
        with self._jobs:
            self._jobs.notify_all()

    def wait_for_jobs(self, timeout: float) -> None:
        with self._jobs:
            self._jobs.wait(timeout)

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ChatError("The database is closed.")


class DuckDatabase(Database):
    """One DuckDB connection per process; every thread reads on its own cursor, writes go through one lock."""

    dialect = DuckDialect()

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str, clock: Callable[[], datetime] = utcnow):
        super().__init__(path, clock)
        self._connection = connection
        self._write_lock = FairLock()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor for this thread (a cursor costs ~5 µs; sharing one across threads fails)."""
        self._check_open()
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

    @contextmanager
    def analytics(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.cursor() as cur:
            yield cur

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
                self._committed(tx)
                return result
        raise AssertionError("unreachable")

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold writers off (benchmarks fill a cache consistently with it)."""
        with self._write_lock:
            yield

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


def open_duckdb(path: str, clock: Callable[[], datetime] = utcnow) -> DuckDatabase:
    """Open (creating if needed) and migrate the DuckDB database at ``path``; ``:memory:`` is allowed."""
    from core.migrations import DuckMigrator, migrate

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
    migrate(DuckMigrator(connection))
    return DuckDatabase(connection, path, clock)


def connect(target: str, clock: Callable[[], datetime] = utcnow) -> Database:
    """Open and migrate the database ``target`` names: a DuckDB file, ``:memory:``, or a ``postgresql://`` URL."""
    if is_postgres_url(target):
        from core.pg import open_postgres

        return open_postgres(target, clock)
    return open_duckdb(target, clock)
