"""The embedding job queue: rows in ``embedding_jobs``, one per message and provider, claimed under a lease.

The Embedder finds new messages past a watermark kept in ``search_state`` (``discover``), claims a
batch (``claim``, with a lease), embeds it and writes the vectors while deleting the jobs in one
transaction (``store``, only if it still holds them), so a restart or a second replica neither loses a
job nor writes a vector twice. A provider becomes the one search uses once every message has its
vector (``activate_if_done``, read back by ``active_provider``).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Sequence

from core.embeddings.providers import redacted
from core.store import Database, Transaction

log = logging.getLogger(__package__)  # one logger for the package: the name operators and tests filter on

BATCH = 64  # messages per claim: one API request, one write
LEASE_SECONDS = 120  # a claim older than this is taken over (its worker died); a batch takes well under it
MAX_ATTEMPTS = 3  # a message the provider keeps refusing is marked failed, not retried forever
DISCOVER_CHUNK = 50_000  # message ids turned into jobs per transaction (a provider switch covers all history)
OPEN = ("pending", "streaming")  # AI replies still being written: embedded once finished


def _get_state(tx: Any, name: str) -> str | None:
    row = tx.one("SELECT value FROM search_state WHERE name = ?", [name])
    return row[0] if row else None


def _set_state(tx: Transaction, name: str, value: str) -> None:
    tx.execute(
        "INSERT INTO search_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [name, value],
    )


def active_provider(db: Database) -> str | None:
    """The provider whose vectors cover every message (semantic search uses only it), or None."""
    return _get_state(db, "active_provider")


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def discover(db: Database, provider: str, chunk: int = DISCOVER_CHUNK) -> int:
    """Turn messages past the provider's watermark into jobs (up to ``chunk`` ids); return how many ids were scanned."""

    def work(tx: Transaction) -> int:
        key = f"scanned:{provider}"
        # Replicas scan one after the other (the row is locked), so the watermark only moves forward.
        tx.execute("INSERT INTO search_state (name, value) VALUES (?, '0') ON CONFLICT DO NOTHING", [key])
        upto = int(tx.one(f"SELECT value FROM search_state WHERE name = ?{db.dialect.for_update}", [key])[0])
        (top,) = tx.one("SELECT max(id) FROM messages WHERE id > ?", [upto])
        if top is None:
            return 0
        high = min(int(top), upto + chunk)
        tx.execute(
            "INSERT INTO embedding_jobs (message_id, provider, state, attempts, created_at) "
            "SELECT id, ?, 'pending', 0, ? FROM messages WHERE id > ? AND id <= ? ON CONFLICT DO NOTHING",
            [provider, db.clock(), upto, high],
        )
        _set_state(tx, key, str(high))
        return high - upto

    return db.write(work)


def claim(db: Database, provider: str, token: str, batch: int = BATCH) -> list[tuple[int, int, str | None]]:
    """Take up to ``batch`` jobs of finished messages: (message id, channel id, text or None if nothing to embed)."""

    def work(tx: Transaction) -> list[tuple[int, int, str | None]]:
        now = db.clock()
        stale = now - timedelta(seconds=LEASE_SECONDS)
        free = "(state = 'pending' OR (state = 'running' AND claimed_at < ?))"
        candidates = tx.execute(
            f"SELECT message_id FROM embedding_jobs j WHERE provider = ? AND {free} AND EXISTS "
            f"(SELECT 1 FROM messages m WHERE m.id = j.message_id AND m.status NOT IN ({_marks(OPEN)})) "
            f"ORDER BY message_id LIMIT ?{db.dialect.skip_locked}",
            [provider, stale, *OPEN, batch],
        ).fetchall()
        if not candidates:
            return []
        ids = [row[0] for row in candidates]
        claimed = tx.execute(
            "UPDATE embedding_jobs SET state = 'running', claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
            f"WHERE provider = ? AND message_id IN ({_marks(ids)}) AND {free} RETURNING message_id",
            [token, now, provider, *ids, stale],
        ).fetchall()
        ids = [row[0] for row in claimed]
        if not ids:
            return []
        rows = tx.execute(
            f"SELECT id, channel_id, status, content FROM messages WHERE id IN ({_marks(ids)}) ORDER BY id", ids
        ).fetchall()
        return [(mid, channel, content if status == "complete" and content.strip() else None)
                for mid, channel, status, content in rows]

    return db.write(work)


def store(db: Database, provider: str, token: str, results: Sequence[tuple[int, int, Any]]) -> int:
    """Write the vectors of jobs this worker still holds and delete those jobs; return how many were written."""
    if not results:
        return 0

    def work(tx: Transaction) -> int:
        ids = [message_id for message_id, _, _ in results]
        held = {
            row[0]
            for row in tx.execute(
                "DELETE FROM embedding_jobs WHERE provider = ? AND claimed_by = ? AND state = 'running' "
                f"AND message_id IN ({_marks(ids)}) RETURNING message_id",
                [provider, token, *ids],
            ).fetchall()
        }
        rows = [(mid, channel, vector) for mid, channel, vector in results if mid in held and vector is not None]
        if rows:
            now = db.clock()
            values = ", ".join("(?, ?, ?, nextval('message_vectors_seq'), ?, ?)" for _ in rows)
            params: list[Any] = []
            for mid, channel, vector in rows:
                params.extend([mid, channel, provider, [float(x) for x in vector], now])
            tx.execute(
                f"INSERT INTO message_vectors (message_id, channel_id, provider, seq, vector, created_at) VALUES {values} "
                "ON CONFLICT (message_id) DO UPDATE SET channel_id = excluded.channel_id, provider = excluded.provider, "
                "seq = excluded.seq, vector = excluded.vector, created_at = excluded.created_at",
                params,
            )
        return len(rows)

    return db.write(work)


def requeue_changed(db: Database, provider: str) -> int:
    """Jobs for scanned messages whose text changed after their vector (a retried reply) or that have none."""

    def work(tx: Transaction) -> int:
        scanned = int(_get_state(tx, f"scanned:{provider}") or 0)
        rows = tx.execute(
            "INSERT INTO embedding_jobs (message_id, provider, state, attempts, created_at) "
            "SELECT m.id, ?, 'pending', 0, ? FROM messages m "
            "LEFT JOIN message_vectors v ON v.message_id = m.id AND v.provider = ? "
            "WHERE m.id <= ? AND m.status = 'complete' AND m.content <> '' "
            "AND (v.message_id IS NULL OR m.updated_at > v.created_at) "
            "ON CONFLICT DO NOTHING RETURNING message_id",
            [provider, db.clock(), provider, scanned],
        ).fetchall()
        return len(rows)

    return db.write(work)


def release(db: Database, provider: str, token: str, ids: Sequence[int], error: str, counted: bool = True) -> None:
    """Give claimed jobs back after a provider error; after MAX_ATTEMPTS counted ones a job is marked failed.

    ``error`` is kept redacted and capped (``providers.redacted``): admins read it on the Tables page.
    """
    if not ids:
        return
    undo = 0 if counted else 1  # an uncounted error takes back the attempt its claim added

    def work(tx: Transaction) -> None:
        tx.execute(
            "UPDATE embedding_jobs SET attempts = attempts - ?, "
            "state = CASE WHEN attempts - ? >= ? THEN 'failed' ELSE 'pending' END, claimed_by = NULL, error = ? "
            f"WHERE provider = ? AND claimed_by = ? AND state = 'running' AND message_id IN ({_marks(ids)})",
            [undo, undo, MAX_ATTEMPTS, redacted(error), provider, token, *ids],
        )

    db.write(work)


def requeue_running(db: Database, provider: str) -> int:
    """After a restart: jobs left running go back to pending (a live worker's later write of them is refused)."""

    def work(tx: Transaction) -> int:
        rows = tx.execute(
            "UPDATE embedding_jobs SET state = 'pending', claimed_by = NULL "
            "WHERE provider = ? AND state = 'running' RETURNING message_id",
            [provider],
        ).fetchall()
        return len(rows)

    return db.write(work)


def backlog(db: Database, provider: str) -> int:
    """Messages still waiting for this provider's vector: jobs not yet done plus messages not yet scanned."""
    (count,) = db.one(
        "SELECT (SELECT count(*) FROM messages WHERE id > coalesce("
        "  (SELECT CAST(value AS BIGINT) FROM search_state WHERE name = ?), 0)) + "
        "(SELECT count(*) FROM embedding_jobs WHERE provider = ? AND state IN ('pending', 'running'))",
        [f"scanned:{provider}", provider],
    )
    return int(count)


def activate_if_done(db: Database, provider: str) -> bool:
    """Make ``provider`` the one search uses once all history is embedded (open AI replies aside)."""

    def work(tx: Transaction) -> bool:
        if _get_state(tx, "active_provider") == provider:
            return True
        scanned = int(_get_state(tx, f"scanned:{provider}") or 0)
        if tx.one("SELECT 1 FROM messages WHERE id > ? LIMIT 1", [scanned]):
            return False
        left = tx.one(
            "SELECT 1 FROM embedding_jobs j JOIN messages m ON m.id = j.message_id WHERE j.provider = ? "
            f"AND j.state IN ('pending', 'running') AND m.status NOT IN ({_marks(OPEN)}) LIMIT 1",
            [provider, *OPEN],
        )
        if left:
            return False
        _set_state(tx, "active_provider", provider)
        log.info("semantic search uses %s from now on", provider)
        return True

    return db.write(work)
