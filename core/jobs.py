"""The reply queue: a job row per attempt, claimed once across replicas, kept alive by leases, requeued after a crash."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from core.config import DEFAULT_AI_LEASE_SECONDS
from core.messages import refresh_cached
from core.store import Database, Transaction

MAX_ATTEMPTS = 3  # a reply interrupted by restarts this often is closed as an error, not retried forever
LEASE_SECONDS = DEFAULT_AI_LEASE_SECONDS  # a job whose lease is not renewed this long is orphaned (its process died or hung)
INTERRUPTED = "Interrupted by a restart of the app. Press Retry to try again."
PICKING_UP = "The AI was interrupted; picking up again…"
# The step every window shows on a requeued reply, kept with the text it had until the new attempt's first write.
PICKING_UP_STEPS = json.dumps([{"kind": "fallback", "label": PICKING_UP, "state": "running"}], ensure_ascii=False)
OPEN = ("pending", "streaming")


@dataclass(frozen=True)
class Job:
    """One attempt at an AI reply, as a worker holds it."""

    id: int
    channel_id: int
    trigger_id: int
    reply_id: int
    attempts: int
    requested_by: int | None = None  # who asked for this attempt (charged for it); None: nobody known


def claim_next_job(db: Database, lease: float = LEASE_SECONDS, owner: str | None = None) -> Job | None:
    """Take the longest-waiting pending job (each is handed out once, across replicas), or None when there is none.

    A job requeued after a crash keeps its first queue time (``created_at``), so a half-written reply is
    picked up before the replies queued after it, not behind them.
    """

    def work(tx: Transaction) -> Job | None:
        row = tx.one(
            "SELECT id, channel_id, trigger_id, reply_id, attempts, requested_by FROM ai_jobs WHERE state = 'pending' "
            f"ORDER BY created_at, id LIMIT 1{db.dialect.skip_locked}"
        )
        if row is None:
            return None
        now = db.clock()
        tx.execute(
            "UPDATE ai_jobs SET state = 'running', attempts = attempts + 1, claimed_at = ?, lease_until = ?, owner = ? "
            "WHERE id = ?",
            [now, now + timedelta(seconds=lease), owner, row[0]],
        )
        return Job(row[0], row[1], row[2], row[3], row[4] + 1, row[5])

    return db.write(work)


def renew_leases(db: Database, job_ids: list[int], lease: float = LEASE_SECONDS) -> None:
    """Extend the leases of jobs this process is running (its heartbeat), so no sweep takes them over."""
    if not job_ids:
        return
    marks = ", ".join("?" for _ in job_ids)
    until = db.clock() + timedelta(seconds=lease)
    db.write(
        lambda tx: tx.execute(
            f"UPDATE ai_jobs SET lease_until = ? WHERE state = 'running' AND id IN ({marks})", [until, *job_ids]
        )
    )


def pending_jobs(db: Database) -> int:
    """How many replies wait for a worker."""
    return db.one("SELECT count(*) FROM ai_jobs WHERE state = 'pending'")[0]


def recover_interrupted(db: Database, everything: bool | None = None) -> dict[str, int]:
    """Re-queue replies whose worker is gone (up to MAX_ATTEMPTS), close the rest as errors.

    ``everything`` (at start, when no other process can be running jobs: a DuckDB file has one owner)
    takes every running job; otherwise only those whose lease expired, never one a live replica is still
    streaming — not even one whose owner looks like this process, as a container restarted with the same
    hostname and pid (or a second replica given both) would look. A requeued job is a new row: the old
    one is retired, so a worker that was only slow, not dead, finds its writes refused. It keeps its place
    in line: jobs are claimed by their trigger's age (``claim_next_job``).
    """
    if everything is None:
        everything = not db.shared

    def work(tx: Transaction) -> dict[str, int]:
        now = db.clock()
        requeued = closed = 0
        stale = "" if everything else " AND (j.lease_until IS NULL OR j.lease_until < ?)"
        for job_id, channel_id, trigger_id, reply_id, attempts, requested_by, queued_at, status in tx.rows(
            "SELECT j.id, j.channel_id, j.trigger_id, j.reply_id, j.attempts, j.requested_by, j.created_at, m.status "
            "FROM ai_jobs j LEFT JOIN messages m ON m.id = j.reply_id "
            f"WHERE j.state = 'running'{stale} ORDER BY j.id",
            [] if everything else [now],
        ):
            held = tx.one(f"SELECT state FROM ai_jobs WHERE id = ?{db.dialect.skip_locked}", [job_id])
            if held is None or held[0] != "running":
                continue  # another replica's sweep holds or just took it
            tx.execute("UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE id = ?", [now, job_id])
            if status not in OPEN:  # stopped while it ran: nothing is left to write
                continue
            if attempts < MAX_ATTEMPTS:
                tx.execute(  # the same ask, run again: charged to the same person, not a new ask, and in its place
                    "INSERT INTO ai_jobs (channel_id, trigger_id, reply_id, state, attempts, requested_by, cause, "
                    "created_at) VALUES (?, ?, ?, 'pending', ?, ?, 'requeue', ?)",
                    [channel_id, trigger_id, reply_id, attempts, requested_by, queued_at],
                )
                tx.execute(  # the text written so far stays in view, marked, until the new attempt writes
                    "UPDATE messages SET status = 'pending', steps = ?, updated_at = ? "
                    "WHERE id = ? AND status IN ('pending', 'streaming')",
                    [PICKING_UP_STEPS, now, reply_id],
                )
                requeued += 1
            else:
                tx.execute(
                    "UPDATE messages SET status = 'error', error = ?, updated_at = ? "
                    "WHERE id = ? AND status IN ('pending', 'streaming')",
                    [INTERRUPTED, now, reply_id],
                )
                closed += 1
            refresh_cached(db, tx, reply_id)
        # Open replies with no job left to finish them (e.g. a job row from an older version).
        for (reply_id,) in tx.rows(
            "SELECT m.id FROM messages m WHERE m.status IN ('pending', 'streaming') AND NOT EXISTS "
            "(SELECT 1 FROM ai_jobs j WHERE j.reply_id = m.id AND j.state IN ('pending', 'running'))"
        ):
            tx.execute(
                "UPDATE messages SET status = 'error', error = ?, updated_at = ? WHERE id = ? "
                "AND status IN ('pending', 'streaming')",
                [INTERRUPTED, now, reply_id],
            )
            refresh_cached(db, tx, reply_id)
            closed += 1
        if requeued:
            tx.announce(jobs=True)
        return {"requeued": requeued, "closed": closed}

    return db.write(work)
