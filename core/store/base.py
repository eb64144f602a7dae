"""The storage seam: what every backend offers the verbs (reads, one-transaction writes, job signals) and its SQL dialect."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb

from core.errors import ChatError
from core.recent import DIRECTORY, RecentMessages

T = TypeVar("T")

WRITE_ATTEMPTS = 6  # a conflict is another writer's commit landing first; a few tries always get through
RETRY_PAUSE = 0.005  # seconds, doubled each try: conflicts clear in milliseconds
# The app needs no file access beyond its own database: this keeps the SQL console inside it.
def utcnow() -> datetime:
    """Naive UTC now: TIMESTAMP columns hold UTC without a zone on both backends."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` names a Postgres database rather than a DuckDB file."""
    return target.startswith(("postgresql://", "postgres://"))


class Dialect:
    """The SQL that differs between backends; the verbs read these, never the backend's name."""

    name = "?"  # for tests, benchmarks and messages only
    double = "DOUBLE"  # a float column in DDL
    blob = "BLOB"  # bytes in DDL (a file's content)
    for_update = ""  # appended to a read inside a write that must lock the rows it reads
    skip_locked = ""  # appended to a claim: take a row no other replica holds
    vector = "FLOAT[256]"  # a message's embedding (core.embeddings.DIMENSIONS wide)
    text_search_ddl: tuple[str, ...] = ()  # what makes search's substring matching fast, run by migration 006

    def contains(self, column: str) -> str:
        """SQL true when ``column`` holds the text bound to its one ``?``, ignoring case; nothing in it is a wildcard."""
        return f"strpos(lower({column}), lower(CAST(? AS VARCHAR))) > 0"


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
        self._job_signals = 0  # counts signal_jobs(): a waiter that read it before looking misses no signal
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

    @contextmanager
    def console_source(self, role: str | None = None) -> Iterator[tuple[dict[str, Any], datetime]]:
        """What a SQL console child process opens (``core.console``), and the time its data is from.

        ``role``: on Postgres, the role the child's session takes (a read-only one); a file has no roles.
        """
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
    def jobs_mark(self) -> int:
        """How many job signals so far: read it before looking for a job, then pass it to wait_for_jobs."""
        with self._jobs:
            return self._job_signals

    def signal_jobs(self) -> None:
        with self._jobs:
            self._job_signals += 1
            self._jobs.notify_all()

    def wait_for_jobs(self, timeout: float, since: int | None = None) -> None:
        """Wait up to ``timeout`` for a job signal; at once if one came after ``since`` (a jobs_mark())."""
        with self._jobs:
            if since is not None and self._job_signals != since:
                return  # signalled between the look and the wait: a job may be waiting now
            self._jobs.wait(timeout)

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ChatError("The database is closed.")


class Migrator:
    """Runs migration steps on one backend: SQL both speak, plus the few DDL pieces that differ."""

    dialect: Dialect = Dialect()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def id_column(self, table: str) -> str:
        """The DDL of an auto-numbered BIGINT primary key named ``id``."""
        raise NotImplementedError

    def create_index(self, name: str, table: str, columns: str) -> None:
        """An index where the backend needs one to stay fast (``columns`` is trusted SQL from a migration)."""
        raise NotImplementedError

    def create_unique_index(self, name: str, table: str, columns: str) -> None:
        """A uniqueness the database enforces between transactions that run at once (``columns``: trusted SQL)."""
        raise NotImplementedError

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while migrating: processes starting at once migrate one after the other."""
        yield
