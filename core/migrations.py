"""Schema history: named migrations, each applied once and recorded in ``migrations``."""
from __future__ import annotations

from typing import Callable

import duckdb

from core.db import utcnow
from core.embeddings import DIMENSIONS

Migration = Callable[[duckdb.DuckDBPyConnection], None]


def m001_initial(cur: duckdb.DuckDBPyConnection) -> None:
    """The original's model: users, channels, messages (author NULL for the AI)."""
    cur.execute("CREATE SEQUENCE users_id_seq")
    cur.execute(
        """CREATE TABLE users (
            id BIGINT PRIMARY KEY DEFAULT nextval('users_id_seq'),
            name VARCHAR NOT NULL,
            name_key VARCHAR NOT NULL UNIQUE,  -- casefolded name: names are unique ignoring case
            created_at TIMESTAMP NOT NULL)"""
    )
    cur.execute("CREATE SEQUENCE channels_id_seq")
    cur.execute(
        """CREATE TABLE channels (
            id BIGINT PRIMARY KEY DEFAULT nextval('channels_id_seq'),
            name VARCHAR NOT NULL,
            name_key VARCHAR NOT NULL UNIQUE,
            created_at TIMESTAMP NOT NULL)"""
    )
    # The id comes from a sequence, so it orders messages strictly even within one millisecond.
    cur.execute("CREATE SEQUENCE messages_id_seq")
    cur.execute(
        """CREATE TABLE messages (
            id BIGINT PRIMARY KEY DEFAULT nextval('messages_id_seq'),
            channel_id BIGINT NOT NULL,
            author_id BIGINT,
            content VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )


def m002_ai_replies(cur: duckdb.DuckDBPyConnection) -> None:
    """AI replies as messages with a state, and a job table that schedules them."""
    for column, kind in [
        ("status", "VARCHAR DEFAULT 'complete'"),  # pending | streaming | complete | error
        ("error", "VARCHAR"),  # the readable reason when status = 'error'
        ("updated_at", "TIMESTAMP"),
        ("stopped", "BOOLEAN"),  # a person pressed Stop; the text so far is kept (default set below)
        ("model", "VARCHAR"),
        ("prompt_tokens", "INTEGER"),
        ("completion_tokens", "INTEGER"),
        ("ttft_ms", "DOUBLE"),  # time to first token
        ("total_ms", "DOUBLE"),
        ("context", "VARCHAR"),  # JSON of exactly what was sent to the model
    ]:
        cur.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    # Not "ADD COLUMN stopped BOOLEAN DEFAULT false": DuckDB 1.5.6 then fails the commit of a table
    # holding rows when another ADD COLUMN follows ("another transaction has altered this table").
    cur.execute("ALTER TABLE messages ALTER COLUMN stopped SET DEFAULT false")
    cur.execute("UPDATE messages SET stopped = false WHERE stopped IS NULL")
    cur.execute("UPDATE messages SET status = 'complete' WHERE status IS NULL")
    cur.execute("CREATE SEQUENCE ai_jobs_id_seq")
    cur.execute(
        """CREATE TABLE ai_jobs (
            id BIGINT PRIMARY KEY DEFAULT nextval('ai_jobs_id_seq'),
            channel_id BIGINT NOT NULL,
            trigger_id BIGINT NOT NULL,   -- the user message that asked for the reply
            reply_id BIGINT NOT NULL,     -- the AI message being written
            state VARCHAR NOT NULL,       -- pending | running | done
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL,
            claimed_at TIMESTAMP,
            finished_at TIMESTAMP)"""
    )


def m003_channel_settings(cur: duckdb.DuckDBPyConnection) -> None:
    """Per-channel reply policy (every | mention | off) and persona (system prompt)."""
    cur.execute("ALTER TABLE channels ADD COLUMN reply_policy VARCHAR DEFAULT 'every'")
    cur.execute("ALTER TABLE channels ADD COLUMN persona VARCHAR")
    cur.execute("UPDATE channels SET reply_policy = 'every' WHERE reply_policy IS NULL")


def m006_search(m) -> None:
    """Message vectors for semantic search, the jobs that compute them, and search's own state."""
    vector = f"FLOAT[{DIMENSIONS}]"  # a fixed-size array: DuckDB reads it back as one Arrow block
    m.execute("CREATE SEQUENCE message_vectors_seq")
    m.execute(
        f"""CREATE TABLE message_vectors (
            message_id BIGINT PRIMARY KEY,
            channel_id BIGINT NOT NULL,
            provider VARCHAR NOT NULL,   -- which model made it: vectors of two providers are never compared
            seq BIGINT NOT NULL,         -- from message_vectors_seq at every write: readers load what is newer
            vector {vector} NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )
    m.execute(
        """CREATE TABLE embedding_jobs (
            message_id BIGINT NOT NULL,
            provider VARCHAR NOT NULL,
            state VARCHAR NOT NULL,      -- pending | running | failed; a done job is deleted as its vector is written
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by VARCHAR,          -- the worker holding it: only that worker may write its vector
            claimed_at TIMESTAMP,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (message_id, provider))"""
    )
    # Watermarks (scanned:<provider>) and the provider whose vectors cover all history (active_provider).
    m.execute("CREATE TABLE search_state (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", m001_initial),
    ("002_ai_replies", m002_ai_replies),
    ("003_channel_settings", m003_channel_settings),
    ("006_search", m006_search),
]


def applied(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations this database has recorded, in order applied."""
    return [row[0] for row in connection.execute("SELECT name FROM migrations ORDER BY applied_at, name").fetchall()]


def migrate(connection: duckdb.DuckDBPyConnection, migrations: list[tuple[str, Migration]] = MIGRATIONS) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction; return the names applied now."""
    connection.execute("CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    done = set(applied(connection))
    now_applied = []
    for name, step in migrations:
        if name in done:
            continue
        connection.begin()
        try:
            step(connection)
            connection.execute("INSERT INTO migrations VALUES (?, ?)", [name, utcnow()])
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except duckdb.Error:
                pass  # a failed commit already ended the transaction; keep the original error
            raise
        now_applied.append(name)
    return now_applied
