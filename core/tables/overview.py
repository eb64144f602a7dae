"""The Tables page's overview: headline numbers and the charts (messages, AI timings, errors, tokens, usage per person,
feedback on AI replies)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from core.errors import ValidationError
from core.limits import ASKS
from core.reactions import FEEDBACK
from core.store import Database
from core.tables.reads import read_one

BUCKETS = ("hour", "day")
ERROR_REASON_CHARS = 80  # reasons are grouped on their start: the tail often carries ids or timings


def _bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise ValidationError(f"Bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}.")
    return bucket


def _since_clause(since: datetime | None, column: str = "m.created_at") -> tuple[str, list[Any]]:
    return ("", []) if since is None else (f" AND {column} >= ?", [since])


def overview_totals(db: Database, since: datetime | None = None) -> dict[str, Any]:
    """Headline numbers: messages, AI replies, errors and the error rate, users, channels."""
    clause, params = _since_clause(since)
    messages, ai, errors = read_one(
        db,
        "SELECT count(*), count(*) FILTER (m.author_id IS NULL), count(*) FILTER (m.status = 'error') "
        f"FROM messages m WHERE true{clause}",
        params,
    )
    users = read_one(db, "SELECT count(*) FROM users")[0]
    channels = read_one(db, "SELECT count(*) FROM channels")[0]
    rate = errors / ai if ai else 0.0
    return {"messages": messages, "ai_replies": ai, "errors": errors, "error_rate": rate, "users": users, "channels": channels}


def messages_over_time(db: Database, bucket: str = "day", since: datetime | None = None,
                       readable: tuple[str, tuple[Any, ...]] | None = None) -> pd.DataFrame:
    """Messages per channel per hour or day: one row per bucket, one column per channel (only ``readable`` ones
    for a visitor who is not an admin: a private channel's name is not shown to who cannot read it)."""
    clause, params = _since_clause(since)
    if readable is not None:
        clause += f" AND m.channel_id IN ({readable[0]})"
        params = [*params, *readable[1]]
    with db.analytics() as cur:
        long = cur.execute(
            "SELECT date_trunc(?, m.created_at) AS bucket, coalesce(c.name, '#' || m.channel_id) AS channel, "
            "count(*) AS messages FROM messages m LEFT JOIN channels c ON c.id = m.channel_id "
            f"WHERE true{clause} GROUP BY ALL ORDER BY bucket",
            [_bucket(bucket), *params],
        ).df()
    if long.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="bucket"))
    wide = long.pivot_table(index="bucket", columns="channel", values="messages", aggfunc="sum", fill_value=0)
    wide.columns.name = None
    return wide


def ai_timings(db: Database, bucket: str = "day", since: datetime | None = None) -> pd.DataFrame:
    """AI time to first token and total time (median and 95th percentile, ms) per hour or day."""
    clause, params = _since_clause(since)
    with db.analytics() as cur:
        frame = cur.execute(
            "SELECT date_trunc(?, m.created_at) AS bucket, "
            "quantile_cont(m.ttft_ms, 0.5) AS \"first token p50\", quantile_cont(m.ttft_ms, 0.95) AS \"first token p95\", "
            "quantile_cont(m.total_ms, 0.5) AS \"total p50\", quantile_cont(m.total_ms, 0.95) AS \"total p95\" "
            "FROM messages m WHERE m.author_id IS NULL AND (m.ttft_ms IS NOT NULL OR m.total_ms IS NOT NULL)"
            f"{clause} GROUP BY ALL ORDER BY bucket",
            [_bucket(bucket), *params],
        ).df()
    return frame.set_index("bucket")


def error_reasons(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """AI errors by reason: how many, and their share (%) of all AI replies, most frequent first."""
    clause, params = _since_clause(since)
    with db.analytics() as cur:
        frame = cur.execute(
            f"WITH ai AS (SELECT m.status, m.error FROM messages m WHERE m.author_id IS NULL{clause}) "
            f"SELECT left(coalesce(error, 'unknown'), {ERROR_REASON_CHARS}) AS reason, count(*) AS errors, "
            '100.0 * count(*) / (SELECT count(*) FROM ai) AS "error rate %" '
            "FROM ai WHERE status = 'error' GROUP BY ALL ORDER BY errors DESC, reason LIMIT 20",
            params,
        ).df()
    return frame.set_index("reason")


def tokens_per_day(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """Prompt and completion tokens of every request to the chat model per day, from the usage ledger (what the budget counts)."""
    clause, params = _since_clause(since, "created_at")
    with db.analytics() as cur:
        frame = cur.execute(
            "SELECT date_trunc('day', created_at) AS day, CAST(sum(prompt_tokens) AS BIGINT) AS prompt, "
            f"CAST(sum(completion_tokens) AS BIGINT) AS completion FROM ai_usage WHERE kind = 'chat'{clause} "
            "GROUP BY ALL ORDER BY day",
            params,
        ).df()
    return frame.set_index("day")


def usage_by_person(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """Per person: messages sent, AI replies asked for (sends and Retries), and the tokens they caused, most first.

    Tokens come from the usage ledger (core.usage): what the daily budget counts, by the time of each request.
    """
    sent_since, sent_params = _since_clause(since, "created_at")
    asked_since, asked_params = _since_clause(since, "created_at")
    used_since, used_params = _since_clause(since, "created_at")
    marks = ", ".join("?" for _ in ASKS)
    with db.analytics() as cur:
        frame = cur.execute(
            f"WITH sent AS (SELECT author_id, count(*) AS messages, max(created_at) AS last_message FROM messages "
            f"WHERE author_id IS NOT NULL{sent_since} GROUP BY author_id), "
            f"asked AS (SELECT requested_by AS user_id, count(*) AS ai_replies FROM ai_jobs "
            f"WHERE cause IN ({marks}){asked_since} GROUP BY requested_by), "
            "used AS (SELECT user_id, CAST(sum(prompt_tokens + completion_tokens) AS BIGINT) AS tokens FROM ai_usage "
            f"WHERE kind = 'chat' AND user_id IS NOT NULL{used_since} GROUP BY user_id) "
            'SELECT u.name AS person, coalesce(s.messages, 0) AS messages, coalesce(a.ai_replies, 0) AS "AI replies", '
            'coalesce(p.tokens, 0) AS "AI tokens", s.last_message AS "last message" '
            "FROM users u LEFT JOIN sent s ON s.author_id = u.id LEFT JOIN asked a ON a.user_id = u.id "
            "LEFT JOIN used p ON p.user_id = u.id "
            "WHERE s.author_id IS NOT NULL OR a.user_id IS NOT NULL OR p.user_id IS NOT NULL "
            'ORDER BY "AI tokens" DESC, messages DESC, person',
            [*sent_params, *ASKS, *asked_params, *used_params],
        ).df()
    return frame


def ai_feedback(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """👍 and 👎 on AI replies (core.reactions.FEEDBACK) per model and channel: replies that got any, and each count."""
    clause, params = _since_clause(since, "r.created_at")
    up, down = FEEDBACK
    with db.analytics() as cur:
        frame = cur.execute(
            "SELECT coalesce(m.model, '(no model)') AS model, coalesce(c.name, '#' || m.channel_id) AS channel, "
            f'count(DISTINCT m.id) AS replies, count(*) FILTER (r.emoji = ?) AS "{up}", '
            f'count(*) FILTER (r.emoji = ?) AS "{down}" '
            "FROM reactions r JOIN messages m ON m.id = r.message_id LEFT JOIN channels c ON c.id = m.channel_id "
            f"WHERE m.author_id IS NULL AND r.emoji IN (?, ?){clause} GROUP BY ALL ORDER BY replies DESC, model, channel",
            [up, down, up, down, *params],
        ).df()
    return frame
