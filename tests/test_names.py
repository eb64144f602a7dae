"""Names that look alike (core/names.py, Unicode TR39 skeletons): refused beside each other, and "AI" for people."""
from __future__ import annotations

import pytest

from core import chat
from core.errors import ValidationError
from core.names import check_distinct, lookalike, skeleton


@pytest.mark.parametrize("name, other", [
    ("Аda", "Ada"),  # Cyrillic А
    ("ΑDA", "Ada"),  # Greek Α, and case
    ("B0b", "Bob"),  # digit zero
    ("Al", "AI"),  # l and I
    ("𝐀𝐝𝐚", "Ada"),  # mathematical bold (NFKD)
    ("A\u200bda", "Ada"),  # an invisible mark
    ("Sarn", "Sam"),  # rn and m
])
def test_look_alikes_share_a_skeleton(name, other):
    assert skeleton(name) == skeleton(other)


@pytest.mark.parametrize("name, other", [("José", "Jose"), ("Ann", "Anna"), ("Bob", "Rob"), ("Ali", "AI")])
def test_different_names_do_not(name, other):
    assert skeleton(name) != skeleton(other)


def test_check_distinct_names_the_name_it_looks_like():
    assert lookalike("Аda", ["Bob", "Ada"]) == "Ada"
    with pytest.raises(ValidationError) as refused:
        check_distinct("Аda", ["Bob", "Ada"], "User")
    assert str(refused.value) == ("A user named 'Ada' already exists, and 'Аda' looks like it: names that look alike "
                                  "are refused, so nobody can pass for someone else.")
    check_distinct("AI", [], "Channel")  # a channel may be called AI
    with pytest.raises(ValidationError, match="the name the AI's messages carry"):
        check_distinct("ΑΙ", [], "User", person=True)  # Greek capitals


def test_new_users_and_channels_like_an_existing_one_are_refused(db):
    chat.create_user(db, "Ada")
    chat.create_channel(db, "general", reply_policy="off")
    for name in ("Аda", "ADA", "AI", "ai", "Al"):
        with pytest.raises(ValidationError, match="already exists|looks like"):
            chat.create_user(db, name)
    with pytest.raises(ValidationError, match="'general' already exists, and 'generaI' looks like it"):
        chat.create_channel(db, "generaI")
    assert chat.create_channel(db, "AI", reply_policy="off")  # only people are kept from the AI's name
    assert chat.create_channel(db, "Ada", reply_policy="off")  # a channel may share a person's name
    assert [u.name for u in chat.list_users(db)] == ["Ada"]



@pytest.mark.parametrize("make", [chat.create_user, chat.create_channel], ids=["users", "channels"])
def test_two_look_alikes_taken_at_the_same_moment_do_not_both_succeed(db, monkeypatch, make):
    """Both transactions pass the look-alike check before either inserts: the database lets only one commit.

    On Postgres writers run in parallel and the unique name_skeleton index decides (the loser's retry meets the
    winner's name and is refused in words); a DuckDB file's writes run one at a time, so there the second never
    overlaps the first.
    """
    import threading

    both_checked = threading.Barrier(2, timeout=3.0)
    real_check = chat.check_distinct

    def check_then_wait(*args, **kwargs):
        real_check(*args, **kwargs)
        try:
            both_checked.wait()  # hold this transaction open until the other one has checked too
        except threading.BrokenBarrierError:  # the other one is not checking at this moment (a retry, DuckDB)
            pass

    monkeypatch.setattr(chat, "check_distinct", check_then_wait)
    results: dict[str, object] = {}

    def take(name: str) -> None:
        try:
            results[name] = make(db, name)
        except Exception as error:  # noqa: BLE001 (what each thread got is the test's result)
            results[name] = error

    threads = [threading.Thread(target=take, args=(name,)) for name in ("Ada", "\u0410da")]  # Latin A, Cyrillic А
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    made = [name for name, result in results.items() if isinstance(result, int)]
    refused = [result for result in results.values() if isinstance(result, ValidationError)]
    assert len(made) == 1 and len(refused) == 1, results
    assert "looks like it" in str(refused[0])
    table = "users" if make is chat.create_user else "channels"
    assert db.rows(f"SELECT name, name_skeleton FROM {table} WHERE name_skeleton = 'ada'") == [(made[0], "ada")]
