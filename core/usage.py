"""The usage ledger: one row for every request to a model, appended and never rewritten; budgets count from it.

Each row says who caused the request (the person whose message asked, or who pressed Retry), which reply
and attempt it was for, the tokens, and when it was made. Requests to a paid embeddings API are rows of
kind ``embedding``: a person's search (reply NULL), a reply's tool search or look-back (the reply's asker and
the reply, taken from ``caused_by`` around the reply's run), and indexing (user NULL: the app itself; one
request embeds a batch of many people's messages). Tokens are the model's reported usage, or, for
a request without it (the stream broke, a person pressed Stop), an estimate of ``CHARS_PER_TOKEN``
characters a token of what was sent and received. The daily budget sums the rows of the UTC day, so a
reply retried five times is charged five times, each on the day it ran.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from core.store import Database, Transaction

CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text: the estimate for requests without reported usage
KINDS = ("chat", "embedding")

# Who requests made in this thread are for when the caller does not say: (user, reply, job). The AI worker sets it
# around a reply's run, so the embeddings its tool searches and look-back ask for are charged to that reply.
_cause: ContextVar[tuple[int | None, int | None, int | None]] = ContextVar("usage_cause", default=(None, None, None))


@contextmanager
def caused_by(user_id: int | None, reply_id: int | None = None, job_id: int | None = None) -> Iterator[None]:
    """Charge the requests made inside (that do not name their cause) to ``user_id`` and this reply and attempt."""
    token = _cause.set((user_id, reply_id, job_id))
    try:
        yield
    finally:
        _cause.reset(token)


def cause() -> tuple[int | None, int | None, int | None]:
    """(user, reply, job) that requests made now are for, as set by ``caused_by``; all None: the app itself."""
    return _cause.get()


@dataclass(frozen=True)
class Use:
    """What one request to a model cost."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the server reported no usage


def estimate(sent: Any, received: str) -> Use:
    """A request's cost from its size: the JSON of what was sent and the text that came back."""
    sent_chars = len(sent) if isinstance(sent, str) else len(json.dumps(sent, ensure_ascii=False))
    return Use(math.ceil(sent_chars / CHARS_PER_TOKEN), math.ceil(len(received) / CHARS_PER_TOKEN), True)


def record(
    db: Database,
    use: Use,
    *,
    kind: str = "chat",
    user_id: int | None = None,
    reply_id: int | None = None,
    job_id: int | None = None,
    model: str | None = None,
) -> None:
    """Append one request's cost to the ledger, at the database clock's time."""
    if kind not in KINDS:
        raise ValueError(f"unknown usage kind {kind!r}")
    db.write(
        lambda tx: tx.execute(
            "INSERT INTO ai_usage (kind, user_id, reply_id, job_id, model, prompt_tokens, completion_tokens, estimated, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [kind, user_id, reply_id, job_id, model, max(0, int(use.prompt_tokens)),
             max(0, int(use.completion_tokens)), bool(use.estimated), db.clock()],
        )
    )


def tokens_since(db: Database, since: datetime, user_id: int | None = None, tx: Transaction | None = None,
                 kind: str = "chat") -> int:
    """Tokens of the ``kind`` requests made since ``since`` (naive UTC), or only those ``user_id`` caused (read in ``tx``)."""
    who, params = ("", []) if user_id is None else (" AND user_id = ?", [user_id])
    row = (tx or db).one(
        "SELECT CAST(coalesce(sum(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM ai_usage "
        f"WHERE kind = ? AND created_at >= ?{who}",
        [kind, since, *params],
    )
    return int(row[0])


def search_times(db: Database, user_id: int, since: datetime, limit: int) -> list[datetime]:
    """When ``user_id``'s own searches asked the embeddings API since ``since``, newest first, at most ``limit``."""
    rows = db.rows(
        "SELECT created_at FROM ai_usage WHERE kind = 'embedding' AND user_id = ? AND reply_id IS NULL "
        "AND created_at > ? ORDER BY created_at DESC LIMIT ?",
        [user_id, since, limit],
    )
    return [row[0] for row in rows]


def of_reply(db: Database, reply_id: int) -> list[dict]:
    """Every request made for one reply, oldest first (each attempt and round; its tools' embeddings are ``kind``
    embedding)."""
    rows = db.rows(
        "SELECT job_id, user_id, model, prompt_tokens, completion_tokens, estimated, created_at, kind FROM ai_usage "
        "WHERE reply_id = ? ORDER BY id",
        [reply_id],
    )
    names = ("job_id", "user_id", "model", "prompt_tokens", "completion_tokens", "estimated", "created_at", "kind")
    return [dict(zip(names, row)) for row in rows]
