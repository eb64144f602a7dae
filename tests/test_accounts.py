"""core/accounts.py on both backends: users bound to issuer + subject, names from tokens, renames, roles."""
from __future__ import annotations

import threading

import pytest

from core import accounts, chat
from core.accounts import Identity, LoginError, identity_from_claims, is_admin, rename_user, user_for
from core.errors import ValidationError

ISS = "https://issuer.example"


def claims(sub: str = "s1", **extra) -> dict:
    return {"is_logged_in": True, "iss": ISS, "sub": sub, **extra}


def test_claims_become_an_identity():
    assert identity_from_claims({}) is None
    assert identity_from_claims({"is_logged_in": False, "iss": ISS, "sub": "x"}) is None
    assert identity_from_claims({"email": "test@example.com"}) is None  # AppTest's default st.user: not logged in
    found = identity_from_claims(claims(email=" Ann@Example.COM ", email_verified="true", name="Ann"))
    assert found == Identity(ISS, "s1", "ann@example.com", True, "Ann")
    assert identity_from_claims(claims(email_verified=False)).email_verified is False
    for broken in ({"is_logged_in": True, "iss": ISS}, {"is_logged_in": True, "sub": "x"}, claims(sub="")):
        with pytest.raises(LoginError, match="did not say who you are"):
            identity_from_claims(broken)


def test_first_login_creates_a_user_bound_to_issuer_and_subject(db):
    ann = user_for(db, Identity(ISS, "ann", "ann@example.com", None, "Ann"))
    assert ann.name == "Ann"
    assert user_for(db, Identity(ISS, "ann", "ann@example.com", None, "Someone Else")) == ann  # bound, not renamed
    other_issuer = user_for(db, Identity("https://other.example", "ann", None, None, "Ann"))
    assert other_issuer.id != ann.id and other_issuer.name == "Ann 2"  # a subject is unique only within its issuer
    assert db.rows("SELECT issuer, subject, user_id FROM identities ORDER BY user_id") == [
        (ISS, "ann", ann.id), ("https://other.example", "ann", other_issuer.id)]


def test_names_come_from_the_token_and_stay_valid_and_unique(db):
    def name(sub: str, **extra) -> str:
        return user_for(db, identity_from_claims(claims(sub, **extra))).name

    assert name("a", given_name="Grace", family_name="Hopper") == "Grace Hopper"
    assert name("b", preferred_username="ghopper") == "ghopper"
    assert name("c", email="ada@example.com") == "ada"
    assert name("d") == "user"
    assert name("e", name="\u202eevil\u200b name\n\t x") == "evil name x"  # bidi, zero-width and controls dropped
    assert name("f", name="\u200b\u200b") == "user 2"
    long = name("g", name="x" * 300)
    assert len(long) <= chat.NAME_MAX and long.startswith("xxx")
    chat.create_user(db, "Bo")
    for number in range(2, accounts.NUMBERED_NAMES + 1):
        chat.create_user(db, f"Bo {number}")
    hashed = name("h", name="BO")
    assert hashed.startswith("BO ") and len(hashed) == len("BO ") + accounts.HASH_CHARS


def test_an_email_change_is_recorded(db):
    first = user_for(db, Identity(ISS, "s", "old@example.com", True, "Ann"))
    assert user_for(db, Identity(ISS, "s", "new@example.com", True, "Ann")) == first
    assert db.one("SELECT email FROM identities")[0] == "new@example.com"


def test_simultaneous_first_logins_make_one_user(db):
    identity, found = Identity(ISS, "twin", "twin@example.com", None, "Twin"), []
    gate = threading.Barrier(8)

    def login():
        gate.wait()
        found.append(user_for(db, identity).id)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found) == 8
    assert db.one("SELECT count(*) FROM users")[0] == 1 and db.one("SELECT count(*) FROM identities")[0] == 1


def test_rename_changes_the_name_on_old_messages_too(db):
    ann = user_for(db, Identity(ISS, "ann", None, None, "Ann"))
    channel = chat.create_channel(db, "general", reply_policy="off")
    chat.send_message(db, channel, ann.id, "hello")
    assert chat.list_messages(db, channel)[0].author_name == "Ann"  # now cached
    version = chat.channel_version(db, channel)
    assert rename_user(db, ann.id, "  Ann B.  ").name == "Ann B."
    assert chat.channel_version(db, channel) != version  # open pages re-read the channel
    assert chat.list_messages(db, channel)[0].author_name == "Ann B."
    assert rename_user(db, ann.id, "ANN b.").name == "ANN b."  # only the case changed: still the same person's name
    chat.create_user(db, "Bob")
    with pytest.raises(ValidationError, match="already exists"):
        rename_user(db, ann.id, "bob")
    with pytest.raises(ValidationError, match="cannot be empty"):
        rename_user(db, ann.id, "   ")


def test_admins_are_verified_emails_in_the_list():
    admins = frozenset({"boss@example.com"})
    assert is_admin(Identity(ISS, "b", "boss@example.com", True, None), admins)
    assert not is_admin(Identity(ISS, "b", "boss@example.com", None, None), admins)  # the provider did not say
    assert not is_admin(Identity(ISS, "b", "boss@example.com", False, None), admins)
    assert not is_admin(Identity(ISS, "b", "ann@example.com", True, None), admins)
    assert not is_admin(Identity(ISS, "b", None, True, None), admins)
    assert not is_admin(None, admins)


def test_a_rename_to_a_look_alike_or_the_ai_is_refused(db):
    ann = user_for(db, Identity(ISS, "ann", None, None, "Ann"))
    chat.create_user(db, "Bob")
    for name, like in (("B0b", "Bob"), ("Вob", "Bob"), ("AI", "AI"), ("Al", "AI"), ("ai", "AI")):
        with pytest.raises(ValidationError, match=f"looks like {like!r}|{like!r} already exists, and"):
            rename_user(db, ann.id, name)
    assert chat.get_user(db, ann.id).name == "Ann"
    assert rename_user(db, ann.id, "АNN").name == "АNN"  # a look-alike of one's own name is still one's own
    assert db.rows("SELECT old_name FROM renames WHERE user_id = ?", [ann.id]) == [("Ann",)]


def test_a_first_login_named_like_someone_else_gets_a_number(db):
    chat.create_user(db, "Bob")
    assert user_for(db, Identity(ISS, "imposter", None, None, "Воb")).name == "Воb 2"  # Cyrillic В and о
    assert user_for(db, Identity(ISS, "robot", None, None, "AI")).name == "AI 2"
