"""The DuckDB backend: opening a file (its log replay, damage and lock checks), one-transaction writes, and DuckDB's error texts in plain words.

Over 300 lines on purpose: a backend is one room (as Django keeps each database backend together),
and its opening, writes and error texts share one file handle, one write lock and one set of words.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence

import duckdb

from core.console.snapshot import duckdb_source
from core.errors import ChatError, DatabaseDamaged, DatabaseLocked, StorageError
from core.store.base import RETRY_PAUSE, WRITE_ATTEMPTS, Database, Dialect, Migrator, T, Transaction, utcnow
from core.store.migrations import migrate
from core.store.quoting import literal

log = logging.getLogger(__name__)
DUCKDB_CONFIG = {"enable_external_access": False}
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of an SQLite file, often mistaken for a DuckDB one
# Storage faults in DuckDB's (and the OS's) words, what a person is told, and what to do about it.
STORAGE_FAULTS = (
    ("no space left on device", "the disk is full", "Free some space: the app carries on by itself."),
    ("disk quota exceeded", "the disk quota is used up", "Free some space: the app carries on by itself."),
    ("read-only file system", "the file system is read-only",
     "Make it writable again, or point CHAT_DB at a file on a writable disk."),
    ("permission denied", "the app may not write there (permission denied)",
     "Give the app's user write access to the file and its folder, or point CHAT_DB elsewhere."),
    ("input/output error", "the disk reported an input/output error",
     "Check the disk; if the file is damaged, restore it from a backup."),
)
# Below this much free space on the database's disk, writes are refused before DuckDB tries them: in
# DuckDB 1.5.5 and 1.5.6 a commit whose log write fails half-way aborts the whole process (undoing an
# UPDATE on a table with a primary key hits an internal error; tests/test_db_faults.py shows it). 8 MB
# holds the largest commit (a 1 MB message and its log record) several times over. The same abort follows a
# commit on a file system that turned read-only (ext4 after an I/O error, errors=remount-ro): see _check_disk.
DISK_RESERVE = 8 * 1024 * 1024
# DuckDB's words for a file it cannot read as a database.
DAMAGE = ("corrupt database file", "checksum", "could not read enough bytes", "failure while replaying wal",
          "invalid block", "serialization error", "deserializ")


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


class DuckDialect(Dialect):
    name = "duckdb"
    # One process owns a DuckDB file and its writes go through one lock: no row locks are needed.
    # Search scans the text (strpos over lower()): DuckDB's fts extension measured slower per query
    # (110-730 ms against 70-190 ms at 1M messages) and its index is rebuilt, not updated (bench/search.py).


class DuckMigrator(Migrator):
    dialect = DuckDialect()

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql, list(params))

    def id_column(self, table: str) -> str:
        self.execute(f"CREATE SEQUENCE {table}_id_seq")
        return f"id BIGINT PRIMARY KEY DEFAULT nextval('{table}_id_seq')"

    def create_index(self, name: str, table: str, columns: str) -> None:
        # None: DuckDB's zone maps find a channel's newest rows fast (bench/hot_query.py), and an ART
        # index would slow every write and make indexed columns fail to update in one transaction.
        pass

    def create_unique_index(self, name: str, table: str, columns: str) -> None:
        # None: one process owns the file and its writes run one at a time (DuckDatabase.write holds the write
        # lock), so a check inside the write's transaction already decides alone (and see create_index).
        pass

    def rollback(self) -> None:
        try:
            self.connection.rollback()
        except duckdb.Error:
            pass  # a failed commit already ended the transaction; keep the original error

    def begin(self) -> None:
        self.connection.begin()

    def commit(self) -> None:
        self.connection.commit()


class DuckDatabase(Database):
    """One DuckDB connection per process; every thread reads on its own cursor, writes go through one lock."""

    dialect = DuckDialect()

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str, clock: Callable[[], datetime] = utcnow):
        super().__init__(path, clock)
        self._connection = connection
        self._write_lock = FairLock()
        self._broken = False  # DuckDB stopped after a fatal error: reopen before the next query
        self._folder = None if path == ":memory:" else os.path.dirname(os.path.abspath(path))
        self._refusing: str | None = None  # why writes are refused right now (logged when it starts and ends)

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor for this thread (a cursor costs ~5 µs; sharing one across threads fails)."""
        self._check_open()
        if self._broken:
            self._reopen()
        cur = self._connection.cursor()
        self.cursors_opened += 1
        try:
            yield cur
        finally:
            cur.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._storage("read"), self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        with self._storage("read"), self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchone()

    @contextmanager
    def analytics(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.cursor() as cur:
            yield cur

    # storage faults ------------------------------------------------------
    @contextmanager
    def _storage(self, doing: str) -> Iterator[None]:
        """Turn DuckDB's storage faults into readable errors; after a fatal one, reopen on the next use.

        DuckDB stops a database for good after a fatal error (a checkpoint that hit a full disk): every
        later query says "database has been invalidated". Reopening replays the log of committed writes.
        """
        try:
            yield
        except duckdb.Error as error:
            if isinstance(error, (duckdb.FatalException, duckdb.InternalException)):
                self._broken = True
            translated = storage_error(error, self.path, doing, fatal=self._broken)
            if translated is None:
                raise
            log.warning("database %s failed: %s", doing, _short(error))
            raise translated from None

    def _reopen(self) -> None:
        """Close the stopped DuckDB instance and open the file again (readable error if that fails too)."""
        with self._write_lock:
            if not self._broken or self._closed:
                return
            if self._folder is None:
                raise StorageError("The in-memory database stopped after an error; restart the app.")
            if not os.path.isfile(self.path):  # never start an empty database in place of a missing one
                raise DatabaseDamaged(f"The database file {self.path!r} is gone (moved or deleted while the app "
                                      "ran). Put it back, or restart the app to start an empty database there.")
            try:
                self._connection.close()
            except duckdb.Error:
                pass  # it is stopped anyway
            self._connection = _connect_file(self.path)  # raises a ChatError; the next use tries again
            self._connection.execute(LATE_MATERIALIZATION)
            self._broken = False
            self.recent.invalidate_all()  # a commit that failed late may have landed: re-read every channel
            log.warning("database %s reopened after a fatal error", self.path)

    def _check_disk(self) -> None:
        """Refuse a commit the disk could not take, before DuckDB tries it: a read-only or (nearly) full disk.

        See DISK_RESERVE: DuckDB 1.5.5 can abort the process on a commit that fails. Asked right before each
        commit, so what is left unchecked is the commit itself (README, "When things break").
        """
        if self._folder is None:
            return
        try:
            stats = os.statvfs(self._folder)
        except OSError:
            return  # cannot tell: let DuckDB try
        refused = "Read-only file system" if stats.f_flag & os.ST_RDONLY else _sync_refused(self._folder)
        fault = _fault(refused) if refused else None
        room = ""
        if fault is None:
            refused = None
            if stats.f_bavail * stats.f_frsize < DISK_RESERVE:
                room = f"less than {DISK_RESERVE // 2**20} MB free"
                refused, fault = room, _fault("no space left on device")
        if refused != self._refusing:
            if refused:
                log.warning("database %s: writes refused (%s) until its disk takes them again", self.path, refused)
            else:
                log.warning("database %s: its disk takes writes again", self.path)
            self._refusing = refused
        if fault is None:
            return
        said, advice = fault
        said += f" ({room})" if room else ""
        raise StorageError(f"The database {self.path!r} could not be written: {said}. Nothing was saved. {advice}")

    def checkpoint(self) -> bool:
        """Fold the write-ahead log into the file; False (nothing done) when the disk would refuse it, as a write.

        DuckDB stops the database for good after a checkpoint that failed, and on a read-only disk it cannot be
        opened again: even reads would fail until the disk is writable.
        """
        with self._write_lock, self._storage("write"):
            try:
                self._check_disk()
            except StorageError:
                return False  # _check_disk logged why
            with self.cursor() as cur:
                cur.execute("CHECKPOINT")
        return True

    @contextmanager
    def console_source(self, role: str | None = None) -> Iterator[tuple[dict[str, Any], datetime]]:
        # The child cannot open this file (this process holds DuckDB's lock on it): it gets a snapshot.
        with duckdb_source(self) as source:
            yield source

    def write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction, retrying DuckDB's write conflicts; then run its on-commit actions."""
        with self._write_lock, self._storage("write"):
            pause = RETRY_PAUSE
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                with self.cursor() as cur:
                    tx = Transaction(cur)
                    cur.begin()
                    try:
                        result = work(tx)
                        self._check_disk()  # last thing before the commit: see DISK_RESERVE
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


def _sync_refused(folder: str) -> str | None:
    """The file system's words when it refuses to sync ``folder`` (e.g. "Read-only file system"), else None.

    How a disk that turned read-only after an error shows: Linux 6.15+ no longer marks such an ext4 read-only
    in statvfs (it is "emergency_ro"), but an fsync answers EROFS. The folder, never the database file: closing
    any descriptor of that file would drop DuckDB's lock on it (POSIX locks belong to the process).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None  # cannot tell: let DuckDB try
    try:
        os.fsync(fd)
    except OSError as error:
        return os.strerror(error.errno) if error.errno else None
    finally:
        os.close(fd)
    return None


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.rollback()
    except duckdb.Error:
        pass  # the transaction was already aborted by DuckDB


def _is_conflict(error: Exception) -> bool:
    """A write conflict, or a unique key DuckDB checks only at COMMIT: both clear when tried again."""
    text = str(error)
    return "onflict" in text or "Duplicate key" in text


LATE_MATERIALIZATION = "SET late_materialization_max_rows = 0"  # it slows "10 newest of a channel" by 30-50% (measured)


def open_duckdb(path: str, clock: Callable[[], datetime] = utcnow) -> DuckDatabase:
    """Open (creating if needed) and migrate the DuckDB database at ``path``; ``:memory:`` is allowed.

    Every failure is a ChatError that names the file and what to do: locked by another process, not a
    DuckDB file, damaged, or on a disk that is full, read-only or failing.
    """
    connection = _connect_file(path)
    try:
        connection.execute(LATE_MATERIALIZATION)
        if migrate(DuckMigrator(connection)) and path != ":memory:":
            # DuckDB 1.5 cannot replay an ALTER TABLE from its write-ahead log when the table has a column
            # default that calls a function (our ids' nextval): it needs a default database that is not set
            # yet while a file opens (duckdb/duckdb#18259). Folding the migrations into the file at once
            # keeps them out of the log, so a kill right after a first start does not leave such a log.
            connection.execute("CHECKPOINT")
    except duckdb.Error as error:
        log.warning("could not migrate %s: %s", path, _short(error))
        connection.close()
        raise open_error(error, path) from None
    return DuckDatabase(connection, path, clock)


def _connect_file(path: str) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` with readable errors, replaying a log DuckDB cannot replay by itself (see open_duckdb)."""
    try:
        return duckdb.connect(path, config=DUCKDB_CONFIG)
    except duckdb.Error as error:
        if "failure while replaying wal" not in str(error).lower() or not os.path.exists(f"{path}.wal"):
            raise open_error(error, path) from None
        log.warning("DuckDB could not replay %s.wal when opening the file (%s); replaying it through ATTACH",
                    path, _short(error))
    _replay_log(path)
    try:
        return duckdb.connect(path, config=DUCKDB_CONFIG)
    except duckdb.Error as error:
        raise open_error(error, path) from None


def _replay_log(path: str) -> None:
    """Replay the file's write-ahead log from a connection that has a default database, and fold it in.

    Attached to an in-memory connection, the file replays the log that failed when opened directly
    (the failing lookup needs a default database); CHECKPOINT then writes the replayed rows into the
    file and empties the log. Nothing is thrown away: if this fails too, the files are left as they are.
    """
    scratch = duckdb.connect(":memory:")
    try:
        scratch.execute(f"ATTACH {literal(path)} AS recovering")
        scratch.execute("CHECKPOINT recovering")
        scratch.execute("DETACH recovering")
    except duckdb.Error as error:
        log.error("could not replay %s.wal: %s", path, _short(error))
        raise DatabaseDamaged(
            f"The database {path!r} cannot be opened: its log of the last writes ({path}.wal) cannot be "
            "replayed. Nothing was changed or deleted. Restore a backup, or point CHAT_DB at another file; keep "
            "both files if you ask for help."
        ) from None
    finally:
        scratch.close()
    log.warning("replayed %s.wal into %s", path, path)


def _short(error: BaseException) -> str:
    """DuckDB's first line, without the stack trace an internal error carries."""
    text = str(error).strip()
    line = text.split("\n", 1)[0].strip() if text else type(error).__name__
    return line if line.endswith(".") else line + "."


def _fault(text: str) -> tuple[str, str] | None:
    """(what happened, what to do) for a storage fault in an error text, or None."""
    lowered = text.lower()
    return next(((said, advice) for found, said, advice in STORAGE_FAULTS if found in lowered), None)


def _damaged(path: str, error: BaseException) -> DatabaseDamaged:
    """A page's sentence for a file DuckDB cannot read; DuckDB's own words (checksums, blocks) go to the log."""
    log.error("the database file %s is damaged: %s", path, _short(error))
    return DatabaseDamaged(
        f"The database file {path!r} is damaged: parts of it cannot be read. Restore it from a backup, or point "
        "CHAT_DB at another file (a new name starts an empty database). The app does not change or delete it."
    )


def storage_error(error: BaseException, path: str, doing: str, fatal: bool = False) -> ChatError | None:
    """A readable error for a storage fault DuckDB reported while ``doing`` "read" or "write"; None for other errors."""
    text = str(error)
    verb = "written" if doing == "write" else "read"
    if fault := _fault(text):
        said, advice = fault
        lost = " It may not have been saved: DuckDB stopped the database and reopens it on the next try." if fatal else (
            " Nothing was saved." if doing == "write" else "")
        return StorageError(f"The database {path!r} could not be {verb}: {said}.{lost} {advice}")
    lowered = text.lower()
    if any(word in lowered for word in DAMAGE):
        return _damaged(path, error)
    if fatal:
        return StorageError(
            f"The database {path!r} stopped after an error ({_short(error)}) The app reopens it on the next try."
        )
    if isinstance(error, (duckdb.IOException, duckdb.ConnectionException)):
        return StorageError(f"The database {path!r} could not be {verb}: {_short(error)}")
    return None


def open_error(error: BaseException, path: str) -> ChatError:
    """A readable error for a DuckDB file that could not be opened: which file, what is wrong, what to do."""
    text = str(error)
    lowered = text.lower()
    if "could not set lock on file" in lowered:
        return DatabaseLocked(
            f"Another Channel Chat instance holds the database {path!r}. Stop it, or point CHAT_DB at another file."
        )
    if "is a directory" in lowered or os.path.isdir(path):
        return ChatError(f"CHAT_DB names a folder, {path!r}, not a file: point it at a file such as "
                         f"{os.path.join(path, 'chat.duckdb')!r}.")
    if fault := _fault(text):
        said, advice = fault
        return StorageError(f"Cannot open the database {path!r}: {said}. {advice}")
    if _starts_with(path, SQLITE_MAGIC):
        return DatabaseDamaged(f"{path!r} is an SQLite database, not a DuckDB one. Point CHAT_DB at a DuckDB file "
                               "(a new name starts an empty database); the app does not change this one.")
    if "not a valid duckdb database file" in lowered or isinstance(error, duckdb.PermissionException):
        return DatabaseDamaged(
            f"{path!r} is not a DuckDB database file (it is empty, of another kind, or its start is damaged). "
            "Point CHAT_DB at a DuckDB file (a new name starts an empty database), or restore this one from a "
            "backup; the app does not change it."
        )
    if "version number" in lowered or "newer version" in lowered:
        return DatabaseDamaged(f"{path!r} was written by another DuckDB version ({_short(error)}) Open it with the "
                               "app version that wrote it, or point CHAT_DB at another file.")
    if any(word in lowered for word in DAMAGE) or isinstance(error, (duckdb.InternalException, duckdb.FatalException)):
        return _damaged(path, error)
    return ChatError(f"Cannot open the database {path!r}: {_short(error)}")


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(magic)) == magic
    except OSError:
        return False
