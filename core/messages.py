"""Messages: sending one (and scheduling its AI reply in the same transaction), reading a channel's newest, what the AI sees."""
from __future__ import annotations

import json
import numbers
from datetime import datetime
from typing import Any

from core.channels import wants_reply
from core.errors import NotFound, ValidationError
from core.ids import check_id
from core.limits import Limits, check_send
from core.membership import APP, NotAMember, check_read, is_member
from core.names import has_visible, valid_unicode
from core.recent import CACHE_DEPTH, DIRECTORY, Message
from core.store import Database, Transaction

CONTENT_MAX_BYTES = 1_000_000  # UTF-8 bytes: the original's (Convex) value size limit
RECENT_LIMIT = 10  # what the page shows and what the AI sees, as in the original

MESSAGE_COLUMNS = (
    "m.id, m.channel_id, m.author_id, u.name, m.content, m.status, m.error, m.created_at, m.updated_at, "
    "coalesce(m.stopped, false), m.model, m.prompt_tokens, m.completion_tokens, m.ttft_ms, m.total_ms, m.steps"
)
MESSAGE_FROM = "messages m LEFT JOIN users u ON u.id = m.author_id"


def check_content(content: Any) -> str:
    """Check a message body; it is stored exactly as given."""
    if not isinstance(content, str):
        raise ValidationError("A message must be text.")
    valid_unicode(content, "The message")
    if not content.strip():
        raise ValidationError("The message is empty.")
    size = len(content.encode("utf-8"))
    if size > CONTENT_MAX_BYTES:
        raise ValidationError(f"The message is too long: {size:,} bytes; the limit is {CONTENT_MAX_BYTES:,} (1 MB).")
    if not has_visible(content):
        raise ValidationError("The message is empty: it has no visible characters.")
    return content


def send_message(db: Database, channel_id: Any, author_id: Any, content: Any, limits: Limits | None = None) -> int:
    """Store a user's message and, in the same transaction, schedule the AI reply; return the message id.

    With ``limits`` (core.limits), a send over a person's rate limit raises RateLimited and stores nothing.
    """
    channel_id = check_id(channel_id, "Channel")
    author_id = check_id(author_id, "User")
    content = check_content(content)

    def work(tx: Transaction) -> tuple[Message, Message | None]:
        channel = tx.one("SELECT reply_policy, coalesce(kind, 'public'), name FROM channels WHERE id = ?", [channel_id])
        if channel is None:
            raise NotFound(f"Channel {channel_id} not found.")
        author = tx.one("SELECT name FROM users WHERE id = ?", [author_id])
        if author is None:
            raise NotFound(f"User {author_id} not found.")
        if channel[1] != "public" and not is_member(tx, author_id, channel_id):  # decided in the write itself
            raise NotAMember(f"Only members can write in this {'direct message' if channel[1] == 'direct' else 'channel'}.")
        now = db.clock()
        if limits is not None:
            check_send(db, tx, limits, author_id, wants_reply(channel[0] or "every", content), now)
        (message_id,) = tx.one(
            "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'complete', ?, ?) RETURNING id",
            [channel_id, author_id, content, now, now],
        )
        message = Message(message_id, channel_id, author_id, author[0], content, "complete", None, now, now)
        reply = None
        if wants_reply(channel[0] or "every", content):
            reply = _insert_reply(tx, channel_id, message_id, author_id, now)
        tx.announce(channel_id, jobs=reply is not None)
        tx.on_commit(lambda: db.recent.add(message))
        if reply is not None:
            tx.on_commit(lambda: db.recent.add(reply))
        return message, reply

    message, _ = db.write(work)
    return message.id


def _insert_reply(tx: Transaction, channel_id: int, trigger_id: int, author_id: int, now: datetime) -> Message:
    (reply_id,) = tx.one(
        "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
        "VALUES (?, NULL, '', 'pending', ?, ?) RETURNING id",
        [channel_id, now, now],
    )
    tx.execute(
        "INSERT INTO ai_jobs (channel_id, trigger_id, reply_id, state, requested_by, cause, created_at) "
        "VALUES (?, ?, ?, 'pending', ?, 'send', ?)",
        [channel_id, trigger_id, reply_id, author_id, now],
    )
    return Message(reply_id, channel_id, None, None, "", "pending", None, now, now)


def write_agent_response(db: Database, channel_id: Any, content: Any) -> int:
    """Store a finished AI message (no author) in a channel; return its id."""
    channel_id = check_id(channel_id, "Channel")
    content = check_content(content)

    def work(tx: Transaction) -> int:
        if tx.one("SELECT 1 FROM channels WHERE id = ?", [channel_id]) is None:
            raise NotFound(f"Channel {channel_id} not found.")
        now = db.clock()
        (message_id,) = tx.one(
            "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
            "VALUES (?, NULL, ?, 'complete', ?, ?) RETURNING id",
            [channel_id, content, now, now],
        )
        message = Message(message_id, channel_id, None, None, content, "complete", None, now, now)
        tx.announce(channel_id)
        tx.on_commit(lambda: db.recent.add(message))
        return message_id

    return db.write(work)


def _read_messages(db: Database, channel_id: int, limit: int, before_id: int | None = None) -> list[Message]:
    # Pick the newest rows first, then join their authors: joined first, DuckDB scans the channel's whole
    # history before the LIMIT (84 ms against 4 ms at 5M messages, measured by bench/hot_query.py).
    newest = "SELECT * FROM messages WHERE channel_id = ?"
    params: list[Any] = [channel_id]
    if before_id is not None:
        newest += " AND id < ?"
        params.append(before_id)
    newest += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM ({newest}) m LEFT JOIN users u ON u.id = m.author_id ORDER BY m.id DESC"
    return [Message(*row) for row in db.rows(sql, params)]


def read_messages_uncached(db: Database, channel_id: Any, limit: int = RECENT_LIMIT) -> list[Message]:
    """``list_messages`` straight from DuckDB, bypassing the cache (tests and benchmarks compare the two)."""
    return _read_messages(db, check_id(channel_id, "Channel"), _check_limit(limit))


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or not 1 <= limit <= 1000:
        raise ValidationError(f"limit must be a whole number from 1 to 1000, not {limit!r}.")
    return int(limit)


def list_messages(
    db: Database, channel_id: Any, limit: int = RECENT_LIMIT, before_id: Any = None, *, reader: Any = APP
) -> list[Message]:
    """The channel's ``limit`` most recent messages (older than ``before_id`` if given), newest first.

    ``reader``: the person reading (a user id, or None when nobody is signed in): NotAMember, a sentence, when
    they may not read this channel (core.membership). ``APP`` (the default): the app itself reads.
    """
    channel_id = check_id(channel_id, "Channel")
    limit = _check_limit(limit)
    check_read(db, reader, channel_id)
    if before_id is not None:
        _ensure_channel(db, channel_id)
        return _read_messages(db, channel_id, limit, check_id(before_id, "Message"))
    cached = db.recent.get(channel_id)
    if cached is None:
        _ensure_channel(db, channel_id)
        token = db.recent.version(channel_id)  # a change landing during the read makes the fill not kept
        cached = db.recent.fill(channel_id, _read_messages(db, channel_id, CACHE_DEPTH), token)
    if limit <= len(cached) or len(cached) < CACHE_DEPTH:
        return list(cached[:limit])
    return _read_messages(db, channel_id, limit)


def _ensure_channel(db: Database, channel_id: int) -> None:
    if db.one("SELECT 1 FROM channels WHERE id = ?", [channel_id]) is None:
        raise NotFound(f"Channel {channel_id} not found.")


def channel_version(db: Database, channel_id: int) -> int:
    """A number that changes whenever a message of the channel is added or updated, in any process (no database read)."""
    return db.recent.version(check_id(channel_id, "Channel"))


def directory_version(db: Database) -> int:
    """A number that changes whenever a user or channel is created (the sidebar's lists)."""
    return db.recent.version(DIRECTORY)


def get_message(db: Database, message_id: Any) -> Message:
    """One message, or NotFound."""
    message_id = check_id(message_id, "Message")
    row = db.one(f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = ?", [message_id])
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    return Message(*row)


def load_context(db: Database, channel_id: Any, upto: int | None = None) -> list[dict]:
    """What the AI sees: the 10 most recent finished messages (up to message ``upto``), oldest first."""
    channel_id = check_id(channel_id, "Channel")
    _ensure_channel(db, channel_id)
    sql = (
        "SELECT m.author_id, u.name, m.content FROM messages m LEFT JOIN users u ON u.id = m.author_id "
        "WHERE m.channel_id = ? AND m.status = 'complete' AND m.content <> ''"
    )
    params: list[Any] = [channel_id]
    if upto is not None:
        sql += " AND m.id <= ?"
        params.append(check_id(upto, "Message"))
    rows = db.rows(sql + " ORDER BY m.id DESC LIMIT ?", [*params, RECENT_LIMIT])
    context = []
    for author_id, name, content in reversed(rows):
        if author_id is None:
            context.append({"role": "assistant", "content": content})
        else:
            context.append({"role": "user", "content": f"{name or 'Unknown user'}: {content}"})
    return context


def reply_context(db: Database, message_id: Any) -> list[dict] | None:
    """Exactly what was sent to the model for an AI reply, or None before it was sent."""
    message_id = check_id(message_id, "Message")
    row = db.one("SELECT context FROM messages WHERE id = ?", [message_id])
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    return json.loads(row[0]) if row[0] else None


def refresh_cached(db: Database, tx: Transaction, message_id: int) -> Message:
    """Re-read a message inside the transaction and put it in the cache once the commit lands."""
    row = tx.one(f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = ?", [message_id])
    message = Message(*row)
    tx.announce(message.channel_id)
    tx.on_commit(lambda: db.recent.replace(message))
    return message
