"""Editing and deleting messages: who may, earlier texts kept as revisions, the tombstone, and what follows (index, AI reply).

* ``edit_message``: only the author (the login in login mode; in open mode the user the window speaks as), never
  an AI reply. The text is checked like a send, changed in place, the old text appended to ``message_revisions``;
  the message's vectors are dropped and its embedding jobs queued again, so semantic search follows the new text.
* ``delete_message``: the author, or an admin (recorded in ``deleted_by``); an AI reply only by an admin. A
  tombstone: the text becomes '', and its revisions, reactions, vectors and embedding jobs are deleted; id, author
  and time stay. The AI reply the message asked for goes with it (it may quote the text), stopped first if it is
  still being written; replies whose stored request or tool output quoted it get those lines replaced.
* Both count against ``ACTIONS_PER_MINUTE`` (core.limits.check_action) and reach every window through the cache.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from core.attachments import delete_files
from core.errors import NotFound, ValidationError
from core.ids import check_id
from core.jobs import OPEN
from core.limits import Limits, check_action
from core.messages import check_content, refresh_cached
from core.store import Database, Transaction

NOT_AUTHOR = "Only {name}, who wrote this message, can {verb} it."
AI_NOT_EDITABLE = "AI replies cannot be edited; Retry or Regenerate asks the AI again."
AI_ADMINS_ONLY = "Only an admin can delete an AI reply (it goes by itself with the message that asked for it)."
GONE = "This message was deleted."
SCRUBBED = "[deleted message]"  # what replaces a deleted text where another reply's stored request quoted it
TICK = timedelta(microseconds=1)


def locked_message(db: Database, tx: Transaction, message_id: int) -> tuple:
    """(channel id, author id, author name, content, deleted_at, changed at) of a message, its row locked."""
    row = tx.one(  # no join here: Postgres locks no row of an outer join's nullable side
        "SELECT channel_id, author_id, content, deleted_at, updated_at, reacted_at "
        f"FROM messages WHERE id = ?{db.dialect.for_update}",
        [message_id],
    )
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    name = tx.one("SELECT name FROM users WHERE id = ?", [row[1]]) if row[1] is not None else None
    moments = [t for t in row[4:] if t is not None]
    return row[0], row[1], name[0] if name else None, row[2], row[3], max(moments) if moments else None


def check_person(tx: Transaction, user_id: int) -> None:
    if tx.one("SELECT 1 FROM users WHERE id = ?", [user_id]) is None:
        raise NotFound(f"User {user_id} not found.")


def after(db: Database, changed_at: datetime | None) -> datetime:
    """Now, or just after the row's last change: two states of a row never share a time (the cache keeps the later)."""
    now = db.clock()
    return changed_at + TICK if changed_at is not None and changed_at >= now else now


def record_act(tx: Transaction, user_id: int, kind: str, message_id: int, now: datetime) -> None:
    tx.execute("INSERT INTO message_acts (user_id, kind, message_id, created_at) VALUES (?, ?, ?, ?)",
               [user_id, kind, message_id, now])


def edit_message(db: Database, message_id: Any, by: Any, content: Any, *, limits: Limits | None = None) -> bool:
    """Replace the text of ``by``'s own message, keeping the old one as a revision; False when the text is the same."""
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")
    content = check_content(content)

    def work(tx: Transaction) -> bool:
        check_person(tx, by)
        _, author_id, author_name, old, deleted_at, changed_at = locked_message(db, tx, message_id)
        if deleted_at is not None:
            raise ValidationError(GONE)
        if author_id is None:
            raise ValidationError(AI_NOT_EDITABLE)
        if author_id != by:
            raise ValidationError(NOT_AUTHOR.format(name=author_name or "its author", verb="edit"))
        if content == old:
            return False
        now = after(db, changed_at)
        if limits is not None:
            check_action(db, tx, limits, by, now)
        tx.execute("INSERT INTO message_revisions (message_id, content, edited_at, edited_by) VALUES (?, ?, ?, ?)",
                   [message_id, old, now, by])
        tx.execute("UPDATE messages SET content = ?, edited_at = ?, updated_at = ? WHERE id = ?",
                   [content, now, now, message_id])
        _reindex(tx, message_id, now)
        record_act(tx, by, "edit", message_id, now)
        refresh_cached(db, tx, message_id)
        return True

    return db.write(work)


def _reindex(tx: Transaction, message_id: int, now: datetime) -> None:
    """Drop the message's vectors and queue it again for each provider that had one (a claim in flight is voided:
    its worker no longer holds the job, so the old text's vector is never written)."""
    tx.execute(
        "INSERT INTO embedding_jobs (message_id, provider, state, attempts, created_at) "
        "SELECT message_id, provider, 'pending', 0, ? FROM message_vectors WHERE message_id = ? ON CONFLICT DO NOTHING",
        [now, message_id],
    )
    tx.execute("UPDATE embedding_jobs SET state = 'pending', attempts = 0, claimed_by = NULL, error = NULL "
               "WHERE message_id = ?", [message_id])
    tx.execute("DELETE FROM message_vectors WHERE message_id = ?", [message_id])


def delete_message(db: Database, message_id: Any, by: Any, *, admin: bool = False, limits: Limits | None = None) -> bool:
    """Leave a tombstone of the message (and of the AI reply it asked for); False when it was already deleted.

    ``by`` must be its author, unless ``admin`` (an admin in login mode); an AI reply only an admin deletes.
    """
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")

    def work(tx: Transaction) -> bool:
        check_person(tx, by)
        channel_id, author_id, author_name, content, deleted_at, changed_at = locked_message(db, tx, message_id)
        if deleted_at is not None:
            return False
        if author_id is None and not admin:
            raise ValidationError(AI_ADMINS_ONLY)
        if author_id is not None and author_id != by and not admin:
            raise ValidationError(NOT_AUTHOR.format(name=author_name or "its author", verb="delete"))
        now = after(db, changed_at)
        if limits is not None:
            check_action(db, tx, limits, by, now)
        replies = [row[0] for row in tx.rows(
            "SELECT DISTINCT j.reply_id FROM ai_jobs j JOIN messages r ON r.id = j.reply_id "
            "WHERE j.trigger_id = ? AND r.deleted_at IS NULL AND j.reply_id <> ?", [message_id, message_id])]
        texts = [(message_id, content, author_name)]
        for reply_id in replies:
            reply = locked_message(db, tx, reply_id)
            texts.append((reply_id, reply[3], None))
            now = max(now, after(db, reply[5]))
        for target in [message_id, *replies]:
            _tombstone(tx, target, by, now)
        for target, text, name in texts:
            _scrub_quotes(db, tx, channel_id, target, text, name)
        record_act(tx, by, "delete", message_id, now)
        for target in [message_id, *replies]:
            refresh_cached(db, tx, target)
        return True

    return db.write(work)


def _tombstone(tx: Transaction, message_id: int, by: int, now: datetime) -> None:
    """Remove a message's text and everything made from it; a reply still being written is stopped first."""
    marks = ", ".join("?" for _ in OPEN)
    tx.execute("UPDATE ai_jobs SET state = 'done', finished_at = ? WHERE reply_id = ? AND state <> 'done'",
               [now, message_id])  # a running attempt finds its next write refused
    tx.execute(
        "UPDATE messages SET content = '', deleted_at = ?, deleted_by = ?, updated_at = ?, error = NULL, steps = NULL, "
        f"context = NULL, stopped = CASE WHEN status IN ({marks}) THEN true ELSE stopped END, status = 'complete' "
        "WHERE id = ?",
        [now, by, now, *OPEN, message_id],
    )
    for table in ("message_revisions", "reactions", "message_vectors", "embedding_jobs"):
        tx.execute(f"DELETE FROM {table} WHERE message_id = ?", [message_id])
    delete_files(tx, message_id)  # and its files, their bytes too unless another message holds the same ones


def _scrub_quotes(db: Database, tx: Transaction, channel_id: int, message_id: int, text: str, name: str | None) -> None:
    """Replace a deleted text where other AI replies kept it: their request (``context``: "Name: text", or the AI's
    own earlier answer, both only in later replies of its channel) and their steps' output (tool results and
    retrieval, in any channel, as "[id N · …] Name: text" lines)."""
    line = f"[id {message_id} · "
    by_id = json.dumps(line)[1:-1]  # as json.dumps stored it (ASCII escapes)
    where = "strpos(coalesce(context, ''), ?) > 0 OR strpos(coalesce(steps, ''), ?) > 0"
    params: list[Any] = [by_id, by_id]
    if text:
        where += " OR (channel_id = ? AND id > ? AND strpos(coalesce(context, ''), ?) > 0)"
        params += [channel_id, message_id, json.dumps(f"{name}: {text}" if name is not None else text)[1:-1]]
    rows = tx.rows(f"SELECT id, context, steps FROM messages WHERE author_id IS NULL AND deleted_at IS NULL AND ({where})",
                   params)
    quoted = re.compile(re.escape(line) + r"[^\n]*")
    changed = []

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            value = quoted.sub(f"{line}{SCRUBBED}", value)
            if text and name is not None and value == f"{name}: {text}":
                return f"{name}: {SCRUBBED}"
            return SCRUBBED if text and name is None and value == text else value
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    for reply_id, context, steps in rows:
        new = [json.dumps(scrub(json.loads(stored))) if stored else stored for stored in (context, steps)]
        if new != [context, steps]:
            tx.execute("UPDATE messages SET context = ?, steps = ? WHERE id = ?", [*new, reply_id])
            changed.append(reply_id)
    for reply_id in changed:
        refresh_cached(db, tx, reply_id)


def revisions_of(db: Database, message_id: Any) -> list[dict]:
    """A message's earlier texts, oldest first: {content, edited_at (when it was replaced), edited_by}."""
    message_id = check_id(message_id, "Message")
    if db.one("SELECT 1 FROM messages WHERE id = ?", [message_id]) is None:
        raise NotFound(f"Message {message_id} not found.")
    rows = db.rows("SELECT content, edited_at, edited_by FROM message_revisions WHERE message_id = ? ORDER BY id",
                   [message_id])
    return [{"content": content, "edited_at": at, "edited_by": who} for content, at, who in rows]
