"""Who belongs where and who may read: channel kinds, memberships, and the one reading rule every read path asks.

A channel is ``public``, ``private`` (members only; a member invites, the creator and admins remove, anyone
leaves) or ``direct`` (2-8 people, one conversation per set, nobody added later). A person reads a public channel,
and another only while a member; admins too (only Tables shows them every row). A reply in channel C reads C
and public channels (``hidden_from_ai``). Every read path asks ``can_read`` or filters inside its query.
Over 300 lines on purpose: the acts and the rule read and write the same two tables and together say who may
read; split, the rule's module would have to mirror the acts' invariants (owners, direct keys) to stay true.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable

from core.channels import CHANNEL_COLUMNS, Channel, _insert_named, get_channel, get_user
from core.errors import ChatError, NotFound, ValidationError
from core.ids import check_id
from core.limits import Limits, check_new_channel
from core.store import Database, Transaction

KINDS = ("public", "private", "direct")
DIRECT_MIN = 2  # people in a direct conversation, the one who opens it included
DIRECT_MAX = 8  # more people than this make a private channel, where members can be added and removed
DIRECT_MARK = "\x02direct "  # a direct channel's name_key: this, then its people's sorted ids (migration 014)
DIRECT_POLICY = "mention"  # the AI answers in a direct conversation only when asked (@ai): it is people talking
PUBLIC = "SELECT id FROM channels WHERE kind = 'public'"
MINE = "SELECT channel_id FROM memberships WHERE user_id = ?"


class NotAMember(ChatError):
    """A read or a write of a private channel or direct conversation by someone who is not in it."""


# As ``reader``: the app itself reads (the AI worker, the live route's snapshots, scripts), so no check. A person
# is their user id, or None when nobody is signed in.
APP = type("App", (), {"__repr__": lambda self: "APP"})()


@dataclass(frozen=True)
class Member:
    user_id: int
    name: str
    role: str  # owner | member
    joined_at: datetime
    added_by: int | None


# the rule ------------------------------------------------------------------------------------------
_kinds: "weakref.WeakKeyDictionary[Database, dict[int, str]]" = weakref.WeakKeyDictionary()  # one dict write: no lock


def kind_of(db: Database, channel_id: Any) -> str:
    """A channel's kind (it never changes once made, so each process reads it once), or NotFound."""
    channel_id = check_id(channel_id, "Channel")
    known = _kinds.get(db, {}).get(channel_id)
    if known is not None:
        return known
    row = db.one("SELECT coalesce(kind, 'public') FROM channels WHERE id = ?", [channel_id])
    if row is None:
        raise NotFound(f"Channel {channel_id} not found.")
    _kinds.setdefault(db, {})[channel_id] = row[0]
    return row[0]


def is_member(db: Database | Transaction, person_id: int, channel_id: int) -> bool:
    return db.one("SELECT 1 FROM memberships WHERE channel_id = ? AND user_id = ?", [channel_id, person_id]) is not None


def can_read(db: Database, person_id: Any, channel_id: Any, admin: bool = False) -> bool:
    """Whether ``person_id`` (None: nobody signed in) may read the channel: public, or private/direct and a member.

    ``admin`` is for the Tables page only (admins inspect every row there); the chat never passes it.
    A channel that does not exist is not readable (False, never NotFound: the answer says nothing more).
    """
    try:
        kind = kind_of(db, channel_id)
    except NotFound:
        return False
    if kind == "public" or admin:
        return True
    return person_id is not None and is_member(db, check_id(person_id, "User"), int(channel_id))


def check_read(db: Database, reader: Any, channel_id: Any) -> None:
    """Raise NotAMember (a sentence) unless ``reader`` may read the channel; ``APP`` always may."""
    if reader is APP:
        return
    channel_id = check_id(channel_id, "Channel")
    kind_of(db, channel_id)  # NotFound for a channel that does not exist, as before
    if not can_read(db, reader, channel_id):
        raise NotAMember(f"Channel {channel_id} is private: only its members can read it. Ask a member to invite you.")


def closed_topics(db: Database, topics: Iterable[int]) -> list[int]:
    """Of these channel ids, the existing private and direct ones (whose readers must be checked, and checked again)."""
    return [int(t) for t in topics if t and db.one("SELECT 1 FROM channels WHERE id = ? AND kind <> 'public'", [t])]


def check_member(tx: Transaction, channel_id: int, person_id: int) -> None:
    """Inside a write (Stop, Retry): NotAMember unless the channel is public or ``person_id`` is in it, admins too."""
    kind = tx.one("SELECT coalesce(kind, 'public') FROM channels WHERE id = ?", [channel_id])
    if kind is not None and kind[0] != "public" and not is_member(tx, person_id, channel_id):
        raise NotAMember("Only members of this channel can stop or retry its replies.")


def readable_channels(db: Database, person_id: Any) -> tuple[str, list[Any]]:
    """The ids of the channels ``person_id`` may read, as a SQL subquery and its parameters: ``x IN (sql)``.

    Used inside queries (search, Tables, the channel overview), so filtering happens before ranking and paging.
    """
    if person_id is None:
        return PUBLIC, []
    return f"{PUBLIC} UNION ALL {MINE}", [check_id(person_id, "User")]


@dataclass(frozen=True)
class Hidden:
    """What a search must leave out: these channels, and any channel made after ``upto`` (not yet looked at)."""

    ids: tuple[int, ...]
    upto: int


def _hidden(db: Database, sql: str, params: list[Any]) -> Hidden:
    (upto,) = db.one("SELECT coalesce(max(id), 0) FROM channels")
    rows = db.rows(f"SELECT id FROM channels WHERE kind <> 'public' AND id <= ? AND {sql} ORDER BY id", [upto, *params])
    return Hidden(tuple(int(row[0]) for row in rows), int(upto))


def hidden_from(db: Database, person_id: Any) -> Hidden:
    """The channels ``person_id`` may not read, for search: usually few or none, so the ranking queries stay as fast
    as an all-channel search (bench/search.py); "as a reader" there)."""
    if person_id is None:
        return _hidden(db, "true", [])
    return _hidden(db, f"id NOT IN ({MINE})", [check_id(person_id, "User")])


def hidden_from_ai(db: Database, channel_id: int) -> Hidden:
    """What an AI reply posted in ``channel_id`` may not read: every private channel and direct message but that one.

    Its readers are that channel's readers, so nothing it quotes may come from a channel some of them cannot read.
    """
    return _hidden(db, "id <> ?", [int(channel_id)])


# acts ----------------------------------------------------------------------------------------------
def _log(tx: Transaction, channel_id: int, person: int, act: str, by: int | None, now: datetime) -> None:
    tx.execute("INSERT INTO membership_log (channel_id, user_id, act, by_user, created_at) VALUES (?, ?, ?, ?, ?)",
               [channel_id, person, act, by, now])


def _join(tx: Transaction, channel_id: int, person: int, role: str, by: int | None, now: datetime, act: str) -> None:
    tx.execute("INSERT INTO memberships (channel_id, user_id, role, joined_at, added_by) VALUES (?, ?, ?, ?, ?)",
               [channel_id, person, role, now, by])
    _log(tx, channel_id, person, act, by, now)


def create_private_channel(db: Database, by: Any, name: Any, *, limits: Limits | None = None) -> int:
    """A private channel named ``name`` (the rules of channel names), with ``by`` as its owner and first member."""
    creator = get_user(db, by).id

    def within_limit(tx: Transaction, now: datetime) -> None:
        if limits is not None:
            check_new_channel(db, tx, limits, creator, now)

    def first_member(tx: Transaction, channel_id: int, now: datetime) -> None:
        _join(tx, channel_id, creator, "owner", creator, now, "create")

    return _insert_named(db, "channels", "Channel", name, {"kind": "private", "created_by": creator},
                         within_limit, first_member)


def open_direct(db: Database, by: Any, people: Iterable[Any], *, limits: Limits | None = None) -> int:
    """The direct conversation of ``by`` and ``people`` (2-8 people in all): the existing one for the same set, or new.

    One who left it and opens it again is back in it; nobody else is ever added.
    """
    opener = get_user(db, by).id
    wanted = {opener, *(check_id(person, "User") for person in people)}
    if not DIRECT_MIN <= len(wanted) <= DIRECT_MAX:
        raise ValidationError(f"A direct message is for {DIRECT_MIN} to {DIRECT_MAX} people, you included; "
                              f"this names {len(wanted)}. For more, make a private channel.")
    users = {person: get_user(db, person) for person in sorted(wanted)}  # NotFound for an id that names nobody
    key = DIRECT_MARK + ",".join(str(person) for person in users)
    name = ", ".join(sorted((user.name for user in users.values()), key=str.casefold))

    def work(tx: Transaction) -> int:
        found = tx.one("SELECT id FROM channels WHERE name_key = ?", [key])
        now = db.clock()
        if found is not None:
            if not is_member(tx, opener, found[0]):
                _join(tx, found[0], opener, "member", opener, now, "invite")
                tx.announce(found[0], directory=True)
            return int(found[0])
        if limits is not None:
            check_new_channel(db, tx, limits, opener, now)
        (channel_id,) = tx.one(
            "INSERT INTO channels (name, name_key, created_at, reply_policy, created_by, kind) "
            "VALUES (?, ?, ?, ?, ?, 'direct') RETURNING id", [name, key, now, DIRECT_POLICY, opener])
        for person in users:
            _join(tx, channel_id, person, "owner" if person == opener else "member", opener, now, "create")
        tx.announce(directory=True)
        return int(channel_id)

    return db.write(work)


def _closed_channel(db: Database, channel_id: Any) -> Channel:
    channel = get_channel(db, channel_id)
    if channel.kind == "public":
        raise ValidationError(f"#{channel.name} is public: everyone reads it, so it has no members to add or remove.")
    return channel


def invite(db: Database, by: Any, channel_id: Any, person: Any) -> None:
    """``by``, a member of the private channel, adds ``person`` to it. Direct conversations take nobody new."""
    inviter, guest = get_user(db, by).id, get_user(db, person)
    channel = _closed_channel(db, channel_id)
    if channel.kind == "direct":
        raise ValidationError("Nobody can be added to a direct message: start a new one with everyone in it.")

    def work(tx: Transaction) -> None:
        if not is_member(tx, inviter, channel.id):
            raise NotAMember(f"Only members of #{channel.name} can invite people to it.")
        if is_member(tx, guest.id, channel.id):
            raise ValidationError(f"{guest.name} is already a member of #{channel.name}.")
        _join(tx, channel.id, guest.id, "member", inviter, db.clock(), "invite")
        tx.announce(channel.id, directory=True)

    db.write(work)


def remove(db: Database, by: Any, channel_id: Any, person: Any, *, admin: bool = False) -> None:
    """The channel's owner (its creator), or an admin, takes ``person`` out of a private channel; logged.

    They stop reading it at once: their open sockets close on the next change (views/route.py re-checks).
    """
    remover, gone = get_user(db, by).id, get_user(db, person)
    channel = _closed_channel(db, channel_id)
    if channel.kind == "direct":
        raise ValidationError("Nobody can be removed from a direct message; each person may leave it.")

    def work(tx: Transaction) -> None:
        owner = tx.one("SELECT 1 FROM memberships WHERE channel_id = ? AND user_id = ? AND role = 'owner'",
                       [channel.id, remover])
        if owner is None and not admin:
            raise NotAMember(f"Only the creator of #{channel.name} or an admin can remove people from it.")
        if gone.id == remover:
            raise ValidationError("To take yourself out, leave the channel.")
        if not is_member(tx, gone.id, channel.id):
            raise ValidationError(f"{gone.name} is not a member of #{channel.name}.")
        _leave(tx, channel.id, gone.id, "remove", remover, db.clock())

    db.write(work)


def leave(db: Database, by: Any, channel_id: Any) -> None:
    """``by`` leaves a private channel or a direct conversation (opening the same direct message again comes back)."""
    person = get_user(db, by).id
    channel = _closed_channel(db, channel_id)

    def work(tx: Transaction) -> None:
        if not is_member(tx, person, channel.id):
            raise ValidationError("You are not a member of this channel.")
        _leave(tx, channel.id, person, "leave", person, db.clock())

    db.write(work)


def _leave(tx: Transaction, channel_id: int, person: int, act: str, by: int, now: datetime) -> None:
    tx.execute("DELETE FROM memberships WHERE channel_id = ? AND user_id = ?", [channel_id, person])
    _log(tx, channel_id, person, act, by, now)
    tx.announce(channel_id, directory=True)  # the channel's sockets wake and re-check who may still read


def members(db: Database, channel_id: Any) -> list[Member]:
    """Who belongs to a private or direct channel (owners first, then by name); a public one has no list: []."""
    channel_id = check_id(channel_id, "Channel")
    rows = db.rows(
        "SELECT m.user_id, coalesce(u.name, 'Unknown user'), m.role, m.joined_at, m.added_by FROM memberships m "
        "LEFT JOIN users u ON u.id = m.user_id WHERE m.channel_id = ? "
        "ORDER BY CASE m.role WHEN 'owner' THEN 0 ELSE 1 END, u.name_key, m.user_id",
        [channel_id],
    )
    return [Member(*row) for row in rows]


def shown_as(db: Database, channel: Channel, person_id: Any) -> Channel:
    """The channel as ``person_id`` sees it: a direct message named by its other people ("Bob, Cy")."""
    if channel.kind != "direct":
        return channel
    names = [row[0] for row in db.rows(
        "SELECT u.name FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.channel_id = ? AND m.user_id <> ? "
        "ORDER BY u.name_key", [channel.id, person_id if person_id is not None else 0])]
    return replace(channel, name=", ".join(names) or "only you")


def my_channels(db: Database, person_id: Any) -> list[Channel]:
    """The channels ``person_id`` may read, for the sidebar: public by name, then private, then direct messages.

    A direct message is named by its other people's current names ("Bob, Cy"), as each of them sees it.
    """
    scope, params = readable_channels(db, person_id)
    rows = db.rows(
        f"SELECT {CHANNEL_COLUMNS}, name_key FROM channels WHERE id IN ({scope}) ORDER BY name_key, id", params)
    channels = [Channel(*row[:-1]) for row in rows]
    direct = [c.id for c in channels if c.kind == "direct"]
    others: dict[int, list[str]] = {}
    if direct:
        for channel_id, name in db.rows(
                "SELECT m.channel_id, u.name FROM memberships m JOIN users u ON u.id = m.user_id "
                "WHERE m.channel_id = ANY(?) AND m.user_id <> ? ORDER BY u.name_key", [direct, person_id]):
            others.setdefault(int(channel_id), []).append(name)
    named = [replace(c, name=", ".join(others.get(c.id, [])) or "only you") if c.kind == "direct" else c
             for c in channels]
    order = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(named, key=lambda c: (order[c.kind], c.name.casefold() if c.kind == "direct" else ""))  # stable
