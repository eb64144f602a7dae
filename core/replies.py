"""The life of an AI reply: pending -> streaming -> complete, or error with a readable reason.

The worker in ``core.ai`` drives these verbs; pages call ``retry_reply``, ``regenerate_reply`` and ``stop_reply``,
which check who asks: only who asked for the reply (its trigger's author, or who pressed Retry last) or an admin
may; a Retry or Regenerate is a new ask, charged to whoever pressed it (``core.limits``).
Every change goes through ``Database.write`` and reaches the recent-message cache after commit.
Over 300 lines on purpose: the worker's writes and the people's acts are one row's life, fenced by one job check
(``_holds``) and one ownership rule (``_askers``); the next split is the acts into a module of their own.
"""
from __future__ import annotations

import json
from typing import Any

from core.errors import NotFound, ValidationError
from core.ids import check_id
from core.jobs import OPEN, PICKING_UP_STEPS, Job
from core.limits import Limits, budget_spent, check_retry
from core.membership import check_member
from core.messages import refresh_cached
from core.store import Database, Transaction

STOPPED_EMPTY = "Stopped before the AI wrote anything."
NOT_YOURS = "Only {name}, who asked for this reply, or an admin can {verb} it."
AI_OFF = "The AI does not answer in this channel now, so this reply cannot be retried."


def record_request(db: Database, reply_id: int, messages: list[dict], model: str) -> None:
    """Keep exactly what is sent to the model on the reply (the page's "context used")."""
    reply_id = check_id(reply_id, "Message")

    def work(tx: Transaction) -> None:
        row = tx.one("UPDATE messages SET context = ?, model = ? WHERE id = ? AND deleted_at IS NULL RETURNING id",
                     [json.dumps(messages), model, reply_id])  # a reply deleted meanwhile keeps no copy of its request
        if row is not None:
            refresh_cached(db, tx, reply_id)  # the model shows on the message: keep the cache in step

    db.write(work)


def _holds(db: Database, tx: Transaction, job_id: int) -> bool:
    """Whether a worker's job is still its reply's live attempt (a Retry after Stop, or a sweep, supersedes it)."""
    row = tx.one(f"SELECT state FROM ai_jobs WHERE id = ?{db.dialect.for_update}", [job_id])
    return row is not None and row[0] == "running"


def stream_reply(db: Database, reply_id: int, content: str, job_id: int | None = None) -> bool:
    """Write the text so far and mark the reply streaming; False when it was stopped or retried meanwhile."""
    reply_id = check_id(reply_id, "Message")

    def work(tx: Transaction) -> bool:
        if job_id is not None and not _holds(db, tx, job_id):
            return False
        row = tx.one(  # the first write of a picked-up reply replaces the old text and its "picking up" step
            "UPDATE messages SET content = ?, status = 'streaming', updated_at = ?, "
            "steps = CASE WHEN steps = ? THEN NULL ELSE steps END "
            "WHERE id = ? AND status IN ('pending', 'streaming') RETURNING id",
            [content, db.clock(), PICKING_UP_STEPS, reply_id],
        )
        if row is None:
            return False
        refresh_cached(db, tx, reply_id)
        return True

    return db.write(work)


def record_steps(db: Database, job: Job, steps: list[dict]) -> bool:
    """Keep what the AI did so far on its reply (every viewer sees it); False when the attempt was superseded."""

    def work(tx: Transaction) -> bool:
        if not _holds(db, tx, job.id):
            return False
        row = tx.one(
            "UPDATE messages SET steps = ?, updated_at = ? WHERE id = ? AND status IN ('pending', 'streaming') RETURNING id",
            [json.dumps(steps), db.clock(), job.reply_id],
        )
        if row is None:
            return False
        refresh_cached(db, tx, job.reply_id)
        return True

    return db.write(work)


def finish_reply(
    db: Database,
    job: Job,
    content: str,
    *,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft_ms: float | None = None,
    total_ms: float | None = None,
) -> None:
    """Close a reply as complete with its final text and figures, and the job as done."""

    def work(tx: Transaction) -> None:
        if not _holds(db, tx, job.id):
            return  # a Retry superseded this attempt: the new one writes the reply
        now = db.clock()
        tx.execute(
            "UPDATE messages SET content = CASE WHEN status IN ('pending', 'streaming') THEN ? ELSE content END, "
            "status = CASE WHEN status IN ('pending', 'streaming') THEN 'complete' ELSE status END, "
            "prompt_tokens = ?, completion_tokens = ?, ttft_ms = ?, total_ms = ?, updated_at = ? WHERE id = ?",
            [content, prompt_tokens, completion_tokens, ttft_ms, total_ms, now, job.reply_id],
        )
        tx.execute("UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE id = ?", [now, job.id])
        refresh_cached(db, tx, job.reply_id)

    db.write(work)


def fail_reply(db: Database, job: Job, reason: str, content: str | None = None, total_ms: float | None = None) -> None:
    """Close a reply as an error with a readable reason, keeping any partial text; the job is done."""

    def work(tx: Transaction) -> None:
        if not _holds(db, tx, job.id):
            return  # a Retry superseded this attempt: the new one writes the reply
        now = db.clock()
        params: list[Any] = [reason, now, total_ms]
        keep = ""
        if content is not None:
            keep = ", content = ?"
            params.append(content)
        tx.execute(
            f"UPDATE messages SET status = 'error', error = ?, updated_at = ?, total_ms = ?{keep} "
            "WHERE id = ? AND status IN ('pending', 'streaming')",
            [*params, job.reply_id],
        )
        tx.execute("UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE id = ?", [now, job.id])
        refresh_cached(db, tx, job.reply_id)

    db.write(work)


def _ai_reply(tx: Transaction, message_id: int) -> tuple:
    row = tx.one("SELECT channel_id, author_id, status, stopped, deleted_at FROM messages WHERE id = ?", [message_id])
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    if row[1] is not None:
        raise ValidationError("Only AI replies can be retried or stopped.")
    if row[4] is not None:
        raise ValidationError("This reply was deleted.")
    return row[:4]


def _askers(tx: Transaction | Database, channel_id: int, message_id: int) -> tuple[int | None, int | None, int]:
    """Who asked for a reply: (the trigger's author, who asked for its latest attempt, the trigger's id).

    The trigger is the latest attempt's, else (a reply written by write_agent_response) the last person's
    message before the reply.
    """
    job = tx.one("SELECT requested_by, trigger_id FROM ai_jobs WHERE reply_id = ? ORDER BY id DESC LIMIT 1",
                 [message_id])
    if job is not None:
        author = tx.one("SELECT author_id FROM messages WHERE id = ?", [job[1]])
        author_id = author[0] if author else None
        return author_id, (job[0] if job[0] is not None else author_id), job[1]
    trigger = tx.one(
        "SELECT id, author_id FROM messages WHERE channel_id = ? AND id < ? AND author_id IS NOT NULL "
        "ORDER BY id DESC LIMIT 1",
        [channel_id, message_id],
    )
    return (trigger[1], trigger[1], trigger[0]) if trigger else (None, None, message_id)


def _check_asker(tx: Transaction, askers: tuple, by: int, admin: bool, verb: str) -> None:
    """Raise unless ``by`` may act on the reply: its trigger's author, who asked for this attempt, or an admin."""
    if tx.one("SELECT id FROM users WHERE id = ?", [by]) is None:
        raise NotFound(f"User {by} not found.")
    author, attempt, _ = askers
    if admin or by in (author, attempt):
        return
    name = tx.one("SELECT name FROM users WHERE id = ?", [author]) if author is not None else None
    raise ValidationError(NOT_YOURS.format(name=name[0] if name else "the person", verb=verb))


def retry_reply(db: Database, message_id: Any, by: Any, *, admin: bool = False, limits: Limits | None = None) -> bool:
    """Run a failed or stopped reply again in place, as a new ask charged to ``by``; False when it already runs.

    ``by`` must have asked for the reply (sent its trigger, or pressed Retry for its latest attempt), unless ``admin``
    (an admin in login mode; everyone in open mode, which has no roles). Refused with a sentence when the channel's
    AI is off, today's budget is spent or ``by`` is over their hourly allowance of AI replies (``limits``)."""
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")

    def work(tx: Transaction) -> bool:
        channel_id, _, status, stopped = _ai_reply(tx, message_id)
        check_member(tx, channel_id, by)
        askers = _askers(tx, channel_id, message_id)
        _check_asker(tx, askers, by, admin, "retry")
        trigger_id = askers[2]
        if status in OPEN:
            return False  # a second click while the first retry runs: nothing more to do
        if status == "complete" and not stopped:
            raise ValidationError("This reply is complete; only failed or stopped replies can be retried.")
        _queue_attempt(db, tx, channel_id, message_id, trigger_id, by, limits)
        return True

    return db.write(work)


def _queue_attempt(db: Database, tx: Transaction, channel_id: int, message_id: int, trigger_id: int, by: int,
                   limits: Limits | None) -> None:
    """Set a reply back to pending as a new ask by ``by`` (refused when the AI is off here, the budget is spent or
    ``by`` is over their hourly allowance)."""
    policy = tx.one("SELECT reply_policy FROM channels WHERE id = ?", [channel_id])
    if policy is not None and policy[0] == "off":
        raise ValidationError(AI_OFF)
    now = db.clock()
    if limits is not None:
        if spent := budget_spent(db, limits, tx):
            raise ValidationError(spent)
        check_retry(db, tx, limits, by, now)
    tx.execute(
        "UPDATE messages SET status = 'pending', content = '', error = NULL, stopped = false, steps = NULL, "
        "prompt_tokens = NULL, completion_tokens = NULL, ttft_ms = NULL, total_ms = NULL, updated_at = ? WHERE id = ?",
        [now, message_id],
    )
    # Every earlier attempt is retired (a running one, stopped but not yet noticed, finds its writes
    # refused); the new attempt is a new row, so it counts as an ask at the time it was made.
    tx.execute(
        "UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE reply_id = ? AND state <> 'done'",
        [now, message_id],
    )
    tx.execute(
        "INSERT INTO ai_jobs (channel_id, trigger_id, reply_id, state, requested_by, cause, created_at) "
        "VALUES (?, ?, ?, 'pending', ?, 'retry', ?)",
        [channel_id, trigger_id, message_id, by, now],
    )
    refresh_cached(db, tx, message_id)
    tx.announce(jobs=True)


def regenerate_reply(db: Database, message_id: Any, by: Any, *, admin: bool = False, limits: Limits | None = None) -> bool:
    """Ask again for a finished reply whose message was edited since: a new ask by ``by``, as ``retry_reply``."""
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")

    def work(tx: Transaction) -> bool:
        channel_id, _, status, _ = _ai_reply(tx, message_id)
        askers = _askers(tx, channel_id, message_id)
        _check_asker(tx, askers, by, admin, "regenerate")
        if status in OPEN:
            return False
        trigger = tx.one("SELECT edited_at, deleted_at, (SELECT max(created_at) FROM ai_jobs WHERE reply_id = ?) "
                         "FROM messages WHERE id = ?", [message_id, askers[2]])
        if trigger is None or trigger[1] is not None:
            raise ValidationError("This reply's message was deleted, so there is nothing to regenerate it from.")
        if trigger[0] is None or (trigger[2] is not None and trigger[0] <= trigger[2]):
            raise ValidationError("The message was not edited since this reply was written; use Retry on a failed reply.")
        _queue_attempt(db, tx, channel_id, message_id, askers[2], by, limits)
        return True

    return db.write(work)


def stop_reply(db: Database, message_id: Any, by: Any, *, admin: bool = False) -> bool:
    """End a pending or streaming reply, keeping its text so far; False when it had already ended.

    ``by`` must have asked for the reply (sent its trigger, or pressed Retry for its latest attempt), unless ``admin`` (see ``retry_reply``).
    """
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")

    def work(tx: Transaction) -> bool:
        channel_id, _, status, _ = _ai_reply(tx, message_id)
        check_member(tx, channel_id, by)
        _check_asker(tx, _askers(tx, channel_id, message_id), by, admin, "stop")
        if status not in OPEN:
            return False
        now = db.clock()
        tx.execute(
            "UPDATE messages SET stopped = true, updated_at = ?, "
            "status = CASE WHEN content = '' THEN 'error' ELSE 'complete' END, "
            "error = CASE WHEN content = '' THEN ? ELSE NULL END WHERE id = ?",
            [now, STOPPED_EMPTY, message_id],
        )
        # A job not yet claimed will never run; a running one sees the stop at its next write.
        tx.execute("UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE reply_id = ? AND state = 'pending'",
                   [now, message_id])
        refresh_cached(db, tx, message_id)
        return True

    return db.write(work)


def asked_by(db: Database, message_id: Any) -> set[int]:
    """Who asked for an AI reply and so may stop or retry it (with admins): its trigger's author, and
    whoever asked for its latest attempt (pressed Retry); empty when nobody is known."""
    message_id = check_id(message_id, "Message")
    row = db.one("SELECT channel_id FROM messages WHERE id = ?", [message_id])
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    author, attempt, _ = _askers(db, row[0], message_id)
    return {who for who in (author, attempt) if who is not None}


def latest_ask(db: Database, message_id: Any) -> tuple[int, Any] | None:
    """(the message an AI reply answers, when its latest attempt was asked for), or None (a reply no job wrote)."""
    row = db.one("SELECT trigger_id, created_at FROM ai_jobs WHERE reply_id = ? ORDER BY id DESC LIMIT 1",
                 [check_id(message_id, "Message")])
    return (row[0], row[1]) if row else None
