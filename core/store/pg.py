"""The Postgres backend: the same verbs over psycopg 3 with a connection pool, for several replicas.

What differs from DuckDB lives here: ``?`` placeholders become psycopg's ``%s``; DDL types; a
claim takes a job row with ``FOR UPDATE SKIP LOCKED``; every write that changes a channel, the
job queue or the users/channels lists sends one ``NOTIFY`` inside its transaction, which Postgres
delivers to the other processes at commit (only for committed transactions, in commit order). One
listening connection per process turns those into cache invalidations and job wake-ups; when it
loses its connection it assumes it missed events, drops every cached channel and reconnects.
The Tables page reads through DuckDB with this database attached read-only (``analytics``).
Over 300 lines on purpose: everything that differs on Postgres stands in this one place (a backend is one room).
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Iterator, Sequence

import duckdb
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from core.errors import ChatError, DatabaseUnavailable, StorageError, ValidationError
from core.store.base import RETRY_PAUSE, WRITE_ATTEMPTS, Database, Dialect, Migrator, T, Transaction, utcnow
from core.store.migrations import migrate
from core.store.quoting import identifier, literal

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "channel_chat"  # the LISTEN/NOTIFY channel every process of the app shares
CONNECT_TIMEOUT_S = 5  # a Postgres that does not answer in this long is reported unreachable
POOL_MIN = 2  # connections kept open: a page read and a worker write never wait for a connect
POOL_MAX = 20  # AI workers (4-8) plus page sessions; Neon's and Supabase's free tiers allow more
POOL_WAIT_S = 5.0  # a request waits this long for a connection before it says the database is busy/down
LISTEN_POLL_S = 1.0  # the listener wakes this often to notice close()
RECONNECT_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0)  # the listener's back-off after losing its connection
MIGRATION_LOCK = 0x63686174  # pg_advisory_lock key ("chat"): replicas starting at once migrate one by one
ATTACHED = "pg"  # the name the Postgres database has inside DuckDB (the Tables page's current database)
# The app's tables live here. The console and the Tables page attach only this schema: a database the app shares
# (Supabase's auth.users, another app's tables) shows nothing else to them.
APP_SCHEMA = "public"
USE_ATTACHED = f"USE {identifier(ATTACHED)}.{identifier(APP_SCHEMA)}"  # DuckDB: the app's tables are the current ones
READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"  # the Tables page's connection cannot write
# Storage faults of the server (SQLSTATE 53100, 58030, 25006): a write failed, the connection is fine.
STORAGE_FAULTS = (pg_errors.DiskFull, pg_errors.IoError, pg_errors.ReadOnlySqlTransaction)
RETRIED = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.UniqueViolation)


class PostgresDialect(Dialect):
    name = "postgres"
    double = "DOUBLE PRECISION"
    blob = "BYTEA"
    for_update = " FOR UPDATE"  # writers run in parallel here: lock the rows a write decides on
    skip_locked = " FOR UPDATE SKIP LOCKED"  # replicas claim different jobs without waiting on each other
    vector = "REAL[]"  # Debian's Postgres 15 has no pgvector package; vectors are searched in memory
    # Trigrams index substring matching exactly (LIKE keeps every character literal after escaping):
    # tsvector splits paths, e-mails and punctuation into other words, so it cannot answer "x.*y" or "C:\temp".
    text_search_ddl = (
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE INDEX IF NOT EXISTS messages_content_trgm ON messages USING gin (lower(content) gin_trgm_ops)",
    )

    def contains(self, column: str) -> str:
        # The pattern is folded to a constant at planning, so the trigram index serves it.
        escaped = "replace(replace(replace(lower(CAST(? AS VARCHAR)), '\\', '\\\\'), '%', '\\%'), '_', '\\_')"
        return f"lower({column}) LIKE '%' || {escaped} || '%' ESCAPE '\\'"


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The app's ``?`` placeholders as psycopg's ``%s`` (outside quoted text), a literal ``%`` as ``%%``."""
    out, quote = [], None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        if ch == "%":
            out.append("%%")
            continue
        out.append(ch)
    return "".join(out)


def describe_url(url: str) -> str:
    """``host:port/database`` (and user) of a Postgres URL, never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "a Postgres database (the URL could not be read)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}:{port}/{parts.get('dbname') or parts.get('user') or 'postgres'}"


def split_password(url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password: libpq gets it as a keyword, apart.

    So no connection string the app hands on (to the pool, DuckDB's ATTACH, an error text) carries it.
    """
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # its text quotes the string it could not read: never shown
        raise ValidationError(
            "The Postgres URL (CHAT_DB or [connections.chat] url) could not be read. Characters such as a space, "
            "@, : or / in its password must be percent-encoded (a space as %20)."
        ) from None
    password = parts.pop("password", None)
    return make_conninfo(**parts), password


def _reason(error: BaseException, password: str | None = None) -> str:
    """The first line of a driver error, with the password (and anything that looks like one) removed."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if password:  # as typed, and as a SQL literal quotes it (DuckDB's errors may echo the statement)
        text = text.replace(password, "***").replace(password.replace("'", "''"), "***")
    text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)
    return re.sub(r"://[^@/\s]*@", "://***@", text)


def _password_of(url: str) -> str | None:
    try:
        return conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return None


def _lost_connection(error: psycopg.OperationalError) -> bool:
    """A broken or refused connection (no SQLSTATE, class 08, or the server shutting down), not a query's failure."""
    state = getattr(error, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def storage_error(url: str, error: BaseException) -> StorageError:
    """A readable error for the server's storage faults: disk full, an I/O error, a read-only database."""
    if isinstance(error, pg_errors.ReadOnlySqlTransaction):
        said = "it is read-only right now (a standby, or default_transaction_read_only is on)"
    elif isinstance(error, pg_errors.IoError):
        said = "the server reported an input/output error"
    else:
        said = "the server's disk is full"
    return StorageError(f"The database {describe_url(url)} could not be written: {said}. Nothing was saved; "
                        "the app carries on once the server can write again.")


def unreachable(url: str, error: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"The database {describe_url(url)} is unreachable right now ({_reason(error, _password_of(url))}). "
        "The app keeps trying; reload in a moment."
    )


class PgMigrator(Migrator):
    dialect = PostgresDialect()

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection  # autocommit: BEGIN/COMMIT are the migration's own

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(translate(sql), list(params))

    def id_column(self, table: str) -> str:
        return "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def create_index(self, name: str, table: str, columns: str) -> None:
        self.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

    def create_unique_index(self, name: str, table: str, columns: str) -> None:
        self.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.execute("SELECT pg_advisory_lock(?)", [MIGRATION_LOCK])
        try:
            yield
        finally:
            self.execute("SELECT pg_advisory_unlock(?)", [MIGRATION_LOCK])


class PostgresDatabase(Database):
    """A pool of psycopg connections; writes run in parallel, each in its own transaction."""

    dialect = PostgresDialect()
    shared = True

    def __init__(self, url: str, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(url, clock)
        self.origin = uuid.uuid4().hex[:12]  # this process's mark on its NOTIFYs: its own need no invalidation
        self._dsn, password = split_password(url)
        self._login = {"password": password} if password is not None else {}
        self._pool = ConnectionPool(
            self._dsn,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=POOL_WAIT_S,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, **self._login},
            check=ConnectionPool.check_connection,  # a connection a Postgres restart broke is replaced, not used
            name="channel-chat",
            open=False,
        )
        self._pool.open(wait=False)
        self._analytics: duckdb.DuckDBPyConnection | None = None
        self._analytics_lock = threading.Lock()
        self.listener_connected = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="pg-listener", daemon=True)
        self._listener.start()

    def describe(self) -> str:
        return describe_url(self.path)

    # reads ---------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        self._check_open()
        self.cursors_opened += 1
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as error:
            raise unreachable(self.path, error) from None
        except STORAGE_FAULTS as error:
            raise storage_error(self.path, error) from None
        except psycopg.OperationalError as error:
            if not _lost_connection(error):
                raise  # a serialization failure or deadlock: write() retries it
            raise unreachable(self.path, error) from None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(translate(sql), list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        with self._connection() as conn:
            return conn.execute(translate(sql), list(params)).fetchone()

    @contextmanager
    def analytics(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._check_open()
        with self._analytics_lock:
            if self._analytics is None:
                self._analytics = attach_read_only(self.path)
            connection = self._analytics
        cur = connection.cursor()
        try:
            cur.execute(USE_ATTACHED)  # a cursor is a new DuckDB connection: it does not inherit USE
            yield cur
        except duckdb.IOException as error:
            if "postgres" in str(error).lower() or "connection" in str(error).lower():
                raise unreachable(self.path, error) from None
            raise
        finally:
            cur.close()

    @contextmanager
    def console_source(self, role: str | None = None) -> Iterator[tuple[dict[str, Any], datetime]]:
        # The child attaches the database itself, read-only, live; Postgres stops the query at the cap too.
        # The password travels apart from the DSN: DuckDB shows an attached database's DSN in duckdb_databases().
        # The server options are the app's own (the child hands them to libpq with its statement timeout).
        parts = conninfo_to_dict(self.path)
        password = parts.pop("password", None)
        parts.pop("options", None)
        dsn = make_conninfo(**parts, connect_timeout=CONNECT_TIMEOUT_S)
        # ``role`` (CONSOLE_ROLE, a plain name checked by core.config) is taken at the session's start: a role
        # that holds SELECT only, so no setting of the session can turn its queries into writes.
        options = READ_ONLY_OPTIONS + (f" -c role={role}" if role else "")
        yield {"attach": attach_statement(dsn), "use": USE_ATTACHED, "password": password,
               "options": options, "extension_directory": extension_directory()}, self.clock()

    # writes --------------------------------------------------------------
    def write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction, retrying serialization failures, deadlocks and unique clashes.

        A unique clash is retried because the verbs check names before inserting: on the retry the check
        sees the other transaction's row and raises the readable ValidationError.
        """
        pause = RETRY_PAUSE
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._connection() as conn:
                    with conn.transaction():
                        tx = Transaction(conn.cursor(), translate)
                        result = work(tx)
                        self._notify(tx)
            except RETRIED as error:
                if attempt == WRITE_ATTEMPTS:
                    raise ChatError("The database stayed busy with conflicting writes; try again.") from error
                log.info("write retried (%d): %s", attempt, type(error).__name__)
                time.sleep(pause)
                pause *= 2
                continue
            self._committed(tx)
            return result
        raise AssertionError("unreachable")

    def _notify(self, tx: Transaction) -> None:
        if not (tx.channels or tx.jobs or tx.directory):
            return
        payload = {"o": self.origin, "c": sorted(tx.channels), "j": tx.jobs, "d": tx.directory}
        tx.cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, json.dumps(payload)])

    # other processes' changes ---------------------------------------------
    def _listen(self) -> None:
        failures = 0
        while not self._closed:
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                     **self._login) as conn:
                    conn.execute(pg_sql.SQL("LISTEN {}").format(pg_sql.Identifier(NOTIFY_CHANNEL)))
                    if failures:  # events may have been missed while disconnected
                        self.recent.invalidate_all()
                        self.signal_jobs()
                    failures = 0
                    self.listener_connected.set()
                    while not self._closed:
                        for note in conn.notifies(timeout=LISTEN_POLL_S):
                            if self._closed:
                                break
                            self._apply(note.payload)
            except Exception as error:  # the connection broke: assume events were missed
                self.listener_connected.clear()
                if self._closed:
                    return
                log.warning("lost the Postgres listener (%s); reconnecting",
                            _reason(error, self._login.get("password")))
                self.recent.invalidate_all()
                self.signal_jobs()
                time.sleep(RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)])
                failures += 1

    def _apply(self, payload: str) -> None:
        try:
            change = json.loads(payload)
        except ValueError:
            log.warning("ignored a malformed change notification")
            return
        if change.get("o") == self.origin:
            return  # this process updated its own cache at commit (or close() woke the listener)
        for channel_id in change.get("c", ()):
            self.recent.invalidate(int(channel_id))
        if change.get("d"):
            self.recent.invalidate(0)
        if change.get("j"):
            self.signal_jobs()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:  # wake the listener now rather than at its next poll
            with self._pool.connection(timeout=1) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, json.dumps({"o": self.origin})])
        except Exception:
            pass  # the server is gone: the listener is not waiting on it either
        self._listener.join(LISTEN_POLL_S + 1)
        self._pool.close()
        with self._analytics_lock:
            if self._analytics is not None:
                self._analytics.close()
                self._analytics = None


# DuckDB over Postgres -------------------------------------------------------
def extension_directory() -> str:
    """A DuckDB extension folder holding the postgres extension that the PyPI package ships (nothing is downloaded).

    DuckDB looks for ``<dir>/v<version>/<platform>/postgres_scanner.duckdb_extension``; the package ships the
    signed file under another name, so a link to it is laid out that way (DuckDB still checks its signature).
    """
    import duckdb_extension_postgres

    shipped = os.path.join(
        os.path.dirname(duckdb_extension_postgres.__file__), "extensions", f"v{duckdb.__version__}", "postgres.duckdb_extension"
    )
    if not os.path.exists(shipped):
        raise ChatError(
            f"The DuckDB postgres extension for DuckDB {duckdb.__version__} is not installed "
            "(pip install duckdb-extension-postgres matching the duckdb version)."
        )
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    root = os.path.join(tempfile.gettempdir(), f"channel-chat-duckdb-extensions-{os.getuid()}")
    folder = os.path.join(root, f"v{duckdb.__version__}", platform)
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "postgres_scanner.duckdb_extension")
    if os.path.realpath(link) != os.path.realpath(shipped):
        tmp = f"{link}.{uuid.uuid4().hex}"
        os.symlink(shipped, tmp)
        os.replace(tmp, link)
    return root


def attach_statement(dsn: str, secret: str | None = None) -> str:
    """DuckDB's statement that attaches the app's schema of the Postgres database at ``dsn`` read-only as ATTACHED.

    Only APP_SCHEMA is attached (the extension's SCHEMA option): other schemas of the database are not in DuckDB's
    catalog. ATTACH takes no parameter, hence the quoting. ``secret``: a DuckDB secret of TYPE postgres that holds
    the password.
    """
    using = f", SECRET {identifier(secret)}" if secret else ""
    return (f"ATTACH {literal(dsn)} AS {identifier(ATTACHED)} "
            f"(TYPE postgres, READ_ONLY, SCHEMA {literal(APP_SCHEMA)}{using})")


def attach_read_only(url: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the Postgres database attached read-only as its current database."""
    connection = duckdb.connect(
        config={
            "extension_directory": extension_directory(),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    try:
        connection.execute("LOAD postgres_scanner")
        dsn, password = split_password(url)
        dsn = make_conninfo(dsn, options=READ_ONLY_OPTIONS, connect_timeout=CONNECT_TIMEOUT_S)
        secret = None
        if password is not None:  # a DuckDB secret carries it: duckdb_databases() shows the DSN, not secrets
            secret = "pg_login"
            connection.execute(f"CREATE TEMPORARY SECRET {secret} (TYPE postgres, PASSWORD {literal(password)})")
        connection.execute(attach_statement(dsn, secret))
        # Loaded and attached: from here on the console cannot reach files or other servers.
        connection.execute("SET enable_external_access = false")
    except duckdb.Error as error:
        connection.close()
        raise unreachable(url, error) from None
    return connection


# opening ----------------------------------------------------------------------
def open_postgres(url: str, clock: Callable[[], datetime] = utcnow) -> PostgresDatabase:
    """Migrate the Postgres database at ``url`` (replicas starting at once migrate once) and open a pool on it."""
    dsn, password = split_password(url)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                             **({"password": password} if password is not None else {})) as conn:
            migrate(PgMigrator(conn))
    except psycopg.OperationalError as error:
        raise unreachable(url, error) from None
    return PostgresDatabase(url, clock)
