"""Who is speaking in login mode: user rows bound to an OIDC issuer + subject, display names, and roles.

Streamlit's ``st.login`` checks the ID token and keeps its claims in a signed cookie; ``st.user`` reads
them back. The pages hand those claims here. A person is the pair (``iss``, ``sub``): the subject is
stable and unique within its issuer, unlike a name or an e-mail address, which people change. The first
login creates a user named from the token (its ``name``, else the e-mail's local part), made unique as
user names are (``Ann``, then ``Ann 2``, ...); the person can rename it later. Users made in open mode
stay as they are and belong to nobody: no login can take one over.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

from core import chat
from core.errors import ChatError, NotFound, ValidationError
from core.limits import Limits, check_rename
from core.names import AI_NAME, skeleton
from core.store import Database, Transaction

FALLBACK_NAME = "user"  # for a token that carries no usable name or e-mail
NUMBERED_NAMES = 99  # "Ann 2" ... "Ann 99" are tried before a name gets a short hash of the identity
HASH_CHARS = 6  # hex digits of sha256(iss, sub) that make a name unique when the numbers run out
TRUE_WORDS = (True, "true", "True", "TRUE", 1, "1")  # how providers spell a verified e-mail


@dataclass(frozen=True)
class Identity:
    """A logged-in person as their ID token names them."""

    issuer: str
    subject: str
    email: str | None = None
    email_verified: bool | None = None  # None: the provider did not say
    name: str | None = None


class LoginError(ChatError):
    """A login that cannot be used (the token lacks an issuer or subject)."""


def identity_from_claims(claims: Mapping[str, Any]) -> Identity | None:
    """The identity in ``st.user``'s claims, or None when nobody is logged in; LoginError if it names nobody."""
    if claims.get("is_logged_in") is not True:
        return None
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not issuer or not isinstance(subject, str) or not subject:
        raise LoginError("Your login did not say who you are (the ID token has no iss or sub). Log out and try again.")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    verified = claims.get("email_verified")
    return Identity(
        issuer=issuer,
        subject=subject,
        email=email.strip().lower() if email and email.strip() else None,
        email_verified=None if verified is None else verified in TRUE_WORDS,
        name=_token_name(claims),
    )


def _token_name(claims: Mapping[str, Any]) -> str | None:
    for key in ("name", "preferred_username", "nickname"):
        if isinstance(claims.get(key), str) and claims[key].strip():
            return claims[key]
    given = " ".join(str(claims[k]) for k in ("given_name", "family_name") if isinstance(claims.get(k), str))
    if given.strip():
        return given
    email = claims.get("email")
    return email.split("@", 1)[0] if isinstance(email, str) and email.strip() else None


def _tidy(raw: str | None) -> str:
    """A token's name as a valid user name: controls and format characters dropped, spaces collapsed, cut to fit."""
    text = "".join(ch for ch in (raw or "") if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    text = re.sub(r"\s+", " ", text).strip()[: chat.NAME_MAX - (HASH_CHARS + 1)].strip()
    try:
        return chat.clean_name(text)
    except ValidationError:
        return FALLBACK_NAME


def _candidates(identity: Identity):
    base = _tidy(identity.name)
    yield base
    for number in range(2, NUMBERED_NAMES + 1):
        yield f"{base} {number}"
    yield f"{base} {hashlib.sha256(f'{identity.issuer} {identity.subject}'.encode()).hexdigest()[:HASH_CHARS]}"


def _bound_user(db_or_tx, identity: Identity) -> tuple[int, str | None] | None:
    return db_or_tx.one("SELECT user_id, email FROM identities WHERE issuer = ? AND subject = ?",
                        [identity.issuer, identity.subject])


def bound_user_id(db: Database, issuer: str, subject: str) -> int | None:
    """The user a login (issuer + subject) speaks as, or None before its first login: a read, never a write."""
    row = db.one("SELECT user_id FROM identities WHERE issuer = ? AND subject = ?", [issuer, subject])
    return None if row is None else int(row[0])


def user_for(db: Database, identity: Identity) -> chat.User:
    """The user this identity speaks as, created and bound on its first login (its e-mail kept up to date)."""
    bound = _bound_user(db, identity)  # the usual case: one read, no write
    if bound is None or bound[1] != identity.email:
        bound = (db.write(lambda tx: _bind(db, tx, identity)), identity.email)
    return chat.get_user(db, bound[0])


def _bind(db: Database, tx: Transaction, identity: Identity) -> int:
    bound = _bound_user(tx, identity)
    if bound is not None:
        tx.execute("UPDATE identities SET email = ? WHERE issuer = ? AND subject = ?",
                   [identity.email, identity.issuer, identity.subject])
        return int(bound[0])
    # A name that looks like another person's (or the AI's) is passed over, as a taken one is.
    taken = {skeleton(row[0]) for row in tx.rows("SELECT name FROM users")} | {skeleton(AI_NAME)}
    for name in _candidates(identity):
        key = chat.name_key(name)
        if key != chat.name_key(AI_NAME) and skeleton(name) not in taken and tx.one(
                "SELECT 1 FROM users WHERE name_key = ?", [key]) is None:
            break
    else:
        raise ValidationError("Could not find a free name for your account; ask an admin.")
    now = db.clock()
    (user_id,) = tx.one("INSERT INTO users (name, name_key, name_skeleton, created_at) VALUES (?, ?, ?, ?) RETURNING id",
                        [name, key, skeleton(name), now])
    tx.execute("INSERT INTO identities (issuer, subject, user_id, email, created_at) VALUES (?, ?, ?, ?, ?)",
               [identity.issuer, identity.subject, user_id, identity.email, now])
    tx.announce(directory=True)
    return int(user_id)


def rename_user(db: Database, user_id: Any, name: Any, limits: Limits | None = None) -> chat.User:
    """Change a user's display name (same rules as a new name); their messages show the new name everywhere.

    With ``limits``, a rename over the person's RENAMES_PER_HOUR raises RateLimited. The same name again
    changes nothing and is not counted.
    """
    user_id = chat.check_id(user_id, "User")
    name = chat.clean_name(name, "Name")
    key = chat.name_key(name)

    def work(tx: Transaction) -> list[int]:
        row = tx.one("SELECT name FROM users WHERE id = ?", [user_id])
        if row is None:
            raise NotFound(f"User {user_id} not found.")
        if row[0] == name:
            return []
        now = db.clock()
        if limits is not None:
            check_rename(db, tx, limits, user_id, now)
        taken = tx.one("SELECT id FROM users WHERE name_key = ?", [key])
        if taken is not None and taken[0] != user_id:
            raise ValidationError(f"A user named {name!r} already exists (names ignore case).")
        others = [other for (other,) in tx.rows("SELECT name FROM users WHERE id <> ?", [user_id])]
        chat.check_distinct(name, others, "User", person=True)
        tx.execute("INSERT INTO renames (user_id, old_name, created_at) VALUES (?, ?, ?)", [user_id, row[0], now])
        tx.execute("UPDATE users SET name = ?, name_key = ?, name_skeleton = ? WHERE id = ?",
                   [name, key, skeleton(name), user_id])
        channels = [row[0] for row in tx.rows("SELECT DISTINCT channel_id FROM messages WHERE author_id = ?", [user_id])]
        for channel_id in channels:  # cached messages carry the author's name: every replica re-reads them
            tx.announce(channel_id)
        tx.announce(directory=True)
        return channels

    for channel_id in db.write(work):
        db.recent.invalidate(channel_id)
    return chat.get_user(db, user_id)


def is_admin(identity: Identity | None, admin_emails: frozenset[str]) -> bool:
    """Whether this login is an admin: its e-mail is in ADMIN_EMAILS and the provider says it verified it.

    A missing ``email_verified`` claim is not a yes: on a provider where anyone may type any e-mail,
    that would hand the console to whoever typed an admin's address.
    """
    return (identity is not None and identity.email is not None and identity.email in admin_emails
            and identity.email_verified is True)
