"""Reactions: anyone toggles an emoji on any message that is not deleted, one per person, emoji and message.

Who reacted is read with each message (``core.messages.with_reactions`` into ``Message.reactions``), so the
list's entry carries the counts and names; a toggle moves the message's ``reacted_at`` and refreshes its cached
row, so every window's list updates. 👍/👎 on an AI reply is also feedback (``feedback``, the Tables overview).
Toggles count against ``ACTIONS_PER_MINUTE`` (core.limits.check_action), a reaction taken back included.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Iterable

from core.edits import GONE, after, check_person, locked_message, record_act
from core.errors import ValidationError
from core.ids import check_id
from core.limits import Limits, check_action
from core.messages import FIELD, MESSAGE_COLUMNS, MESSAGE_FROM, RECORD, refresh_cached, with_reactions
from core.store import Database, Transaction

DEFAULT_ROW = ("👍", "❤️", "😂", "🎉", "👀")  # what the list offers before "any emoji"
FEEDBACK = {"👍": "up", "👎": "down"}  # on an AI reply, these are a verdict on it (Tables overview)
EMOJI_MAX = 16  # code points: the longest common emoji (a family, a flag, a skin-toned couple) is under a dozen
KEYCAP = "\u20e3"
# Parts of an emoji besides symbols: joiner, variation selectors, tag characters (subdivision flags), keycap bases.
JOINERS = {"\u200d", "\ufe0e", "\ufe0f", KEYCAP}


def check_emoji(emoji: Any) -> str:
    """One emoji (with its modifiers), as typed; letters, words and spaces are refused."""
    if not isinstance(emoji, str) or not emoji.strip():
        raise ValidationError("Choose an emoji to react with.")
    emoji = unicodedata.normalize("NFC", emoji.strip())
    if len(emoji) > EMOJI_MAX:
        raise ValidationError("A reaction is one emoji.")
    for ch in emoji:
        symbol = unicodedata.category(ch) in ("So", "Sk", "Mn", "Me")
        tag = 0xE0020 <= ord(ch) <= 0xE007F
        keycap = ch in "0123456789#*" and KEYCAP in emoji
        if not (symbol or tag or keycap or ch in JOINERS):
            raise ValidationError("A reaction is one emoji, not text.")
    if all(ch in JOINERS for ch in emoji) or all(unicodedata.category(ch) in ("Mn", "Me") for ch in emoji):
        raise ValidationError("A reaction is one emoji, not text.")
    return emoji


def toggle_reaction(db: Database, message_id: Any, by: Any, emoji: Any, *, limits: Limits | None = None) -> bool:
    """Add ``by``'s ``emoji`` to the message, or take it back if it was there; True when it is there now."""
    message_id = check_id(message_id, "Message")
    by = check_id(by, "User")
    emoji = check_emoji(emoji)

    def work(tx: Transaction) -> bool:
        check_person(tx, by)
        # The message's row is locked first: toggles of one message are decided one after the other everywhere.
        *_, deleted_at, changed_at = locked_message(db, tx, message_id)
        if deleted_at is not None:
            raise ValidationError(GONE)
        now = after(db, changed_at)
        if limits is not None:
            check_action(db, tx, limits, by, now)
        taken = tx.one("DELETE FROM reactions WHERE message_id = ? AND user_id = ? AND emoji = ? RETURNING emoji",
                       [message_id, by, emoji])
        if taken is None:
            tx.execute("INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES (?, ?, ?, ?)",
                       [message_id, by, emoji, now])
        tx.execute("UPDATE messages SET reacted_at = ? WHERE id = ?", [now, message_id])
        record_act(tx, by, "unreact" if taken else "react", message_id, now)
        refresh_cached(db, tx, message_id)
        return taken is None

    return db.write(work)


def parse(raw: str | None) -> list[dict]:
    """A message's reactions as the list shows them: [{emoji, count, by: [user ids], names}], first reacted first."""
    groups: dict[str, dict] = {}
    for record in (raw or "").split(RECORD):
        parts = record.split(FIELD)
        if len(parts) != 3:
            continue
        emoji, user_id, name = parts
        group = groups.setdefault(emoji, {"emoji": emoji, "count": 0, "by": [], "names": []})
        group["count"] += 1
        group["by"].append(int(user_id))
        group["names"].append(name or "Unknown user")
    return list(groups.values())


def reactions_for(db: Database, channel_id: Any = None, message_ids: Iterable[Any] | None = None) -> dict[int, list[dict]]:
    """{message id: its reactions (as ``parse`` gives them)} of a channel's messages, or of the given messages."""
    if message_ids is not None:
        ids = [check_id(m, "Message") for m in message_ids]
        if not ids:
            return {}
        where, params = f"m.id IN ({', '.join('?' for _ in ids)})", ids
    else:
        where, params = "m.channel_id = ?", [check_id(channel_id, "Channel")]
    rows = db.rows(f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE {where} "
                   "AND EXISTS (SELECT 1 FROM reactions x WHERE x.message_id = m.id)", params)
    return {m.id: parse(m.reactions) for m in with_reactions(db, rows)}
