"""Messages: sending one (and scheduling its AI reply in the same transaction), reading a channel's newest, what the AI sees."""
from __future__ import annotations

import json
import numbers
from dataclasses import replace
from datetime import datetime
from typing import Any, Sequence

from core.attachments import MAX_FILE_BYTES, TEXT, Upload, check_daily, check_uploads, notes_for, store
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
    "coalesce(m.stopped, false), m.model, m.prompt_tokens, m.completion_tokens, m.ttft_ms, m.total_ms, m.steps, "
    "m.edited_at, m.deleted_at, m.deleted_by, m.reacted_at"
)
# A message's reactions ride along as one text (fields split by FIELD, records by RECORD: names and emoji hold no
# control characters), read only for messages that were ever reacted to (``reacted_at``): a correlated subquery
# made every one-row read scan the whole reactions table on DuckDB (2.4 -> 8.3 ms at 140,000 reactions).
FIELD, RECORD = "\x1f", "\x1e"
MESSAGE_FROM = "messages m LEFT JOIN users u ON u.id = m.author_id"


def with_reactions(source: Database | Transaction, rows: list[tuple]) -> list[Message]:
    """Messages from rows of MESSAGE_COLUMNS, each with its reactions (one more read, only if any was reacted to)."""
    messages = [Message(*row) for row in rows]
    reacted = [m.id for m in messages if m.reacted_at is not None]
    if not reacted:
        return messages
    found: dict[int, list[str]] = {}
    for message_id, emoji, user_id, name in source.rows(
        "SELECT r.message_id, r.emoji, r.user_id, u.name FROM reactions r LEFT JOIN users u ON u.id = r.user_id "
        "WHERE r.message_id = ANY(?) ORDER BY r.created_at, r.user_id, r.emoji",
        [reacted],
    ):
        found.setdefault(message_id, []).append(FIELD.join((emoji, str(user_id), name or "")))
    return [replace(m, reactions=RECORD.join(found[m.id])) if m.id in found else m for m in messages]


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


def send_message(
    db: Database, channel_id: Any, author_id: Any, content: Any, limits: Limits | None = None,
    files: Sequence[Upload] = (), max_file_bytes: int = MAX_FILE_BYTES,
) -> int:
    """Store a user's message and, in the same transaction, schedule the AI reply; return the message id.

    With ``limits`` (core.limits), a send over a person's rate limit raises RateLimited and stores nothing.
    ``files`` (core.attachments) go in the same transaction; with files the text may be empty. The AI reads
    text files (as notes in its context: ``load_context``), so a message of images alone gets no AI reply.
    """
    channel_id = check_id(channel_id, "Channel")
    author_id = check_id(author_id, "User")
    uploads = check_uploads(files, max_file_bytes)
    content = "" if uploads and isinstance(content, str) and not has_visible(content) else check_content(content)

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
        readable = bool(content) or any(facts.media_type == TEXT for facts, _ in uploads)  # what the AI can read
        answer = readable and wants_reply(channel[0] or "every", content)
        if limits is not None:
            check_send(db, tx, limits, author_id, answer, now)
            check_daily(tx, limits, author_id, now, sum(facts.size for facts, _ in uploads))
        (message_id,) = tx.one(
            "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'complete', ?, ?) RETURNING id",
            [channel_id, author_id, content, now, now],
        )
        message = Message(message_id, channel_id, author_id, author[0], content, "complete", None, now, now)
        if uploads:
            store(tx, message_id, channel_id, author_id, uploads, now)
        reply = None
        if answer:
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
    return with_reactions(db, db.rows(sql, params))


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
    return with_reactions(db, [row])[0]


def load_context(db: Database, channel_id: Any, upto: int | None = None) -> list[dict]:
    """What the AI sees: the 10 most recent finished messages (up to message ``upto``), oldest first."""
    channel_id = check_id(channel_id, "Channel")
    _ensure_channel(db, channel_id)
    sql = (  # a message of files alone counts: its text files are read (core.attachments.notes_for)
        "SELECT m.id, m.author_id, u.name, m.content FROM messages m LEFT JOIN users u ON u.id = m.author_id "
        "WHERE m.channel_id = ? AND m.status = 'complete' AND m.deleted_at IS NULL "
        "AND (m.content <> '' OR EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id))"
    )
    params: list[Any] = [channel_id]
    if upto is not None:
        sql += " AND m.id <= ?"
        params.append(check_id(upto, "Message"))
    rows = db.rows(sql + " ORDER BY m.id DESC LIMIT ?", [*params, RECENT_LIMIT])
    notes = notes_for(db, [row[0] for row in rows if row[1] is not None])
    context = []
    for message_id, author_id, name, content in reversed(rows):
        if author_id is None:
            context.append({"role": "assistant", "content": content})
            continue
        said = "\n\n".join(part for part in (content, notes.get(message_id)) if part)
        if said:  # files the AI cannot read yet (an image alone) leave nothing to say
            context.append({"role": "user", "content": f"{name or 'Unknown user'}: {said}"})
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
    message = with_reactions(tx, [row])[0]
    tx.announce(message.channel_id)
    tx.on_commit(lambda: db.recent.replace(message))
    return message
