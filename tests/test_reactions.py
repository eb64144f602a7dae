"""Reactions on both backends: toggles, who reacted, the list's entries and versions, concurrency, feedback."""
from __future__ import annotations

import threading

import pytest

from core import chat, edits, jobs, listing, reactions, replies, tables
from core.errors import NotFound, ValidationError


@pytest.fixture
def bob(db):
    return chat.create_user(db, "Bob")


def test_a_toggle_adds_then_takes_back_and_the_entry_says_who(db, ann, bob, general):
    message_id = chat.send_message(db, general, ann, "lunch at noon?")
    version = chat.channel_version(db, general)
    before = listing.entry(db, chat.list_messages(db, general)[0])
    assert reactions.toggle_reaction(db, message_id, ann, "👍") is True
    assert reactions.toggle_reaction(db, message_id, bob, "👍") is True
    assert reactions.toggle_reaction(db, message_id, bob, "🎉") is True
    assert chat.channel_version(db, general) != version
    after = listing.entry(db, chat.list_messages(db, general)[0])
    assert after["version"] > before["version"]  # every list replaces its entry
    assert after["reactions"] == [{"emoji": "👍", "count": 2, "by": [ann, bob], "names": ["Ann", "Bob"]},
                                  {"emoji": "🎉", "count": 1, "by": [bob], "names": ["Bob"]}]
    assert reactions.toggle_reaction(db, message_id, ann, "👍") is False
    assert reactions.reactions_for(db, general)[message_id][0] == {"emoji": "👍", "count": 1, "by": [bob],
                                                                   "names": ["Bob"]}
    assert reactions.reactions_for(db, message_ids=[message_id]) == reactions.reactions_for(db, general)
    assert chat.list_messages(db, general) == chat.read_messages_uncached(db, general)
    # A reaction is no edit: the text's vector stays (no re-embedding), and "(edited)" stays off.
    assert chat.get_message(db, message_id).updated_at == chat.get_message(db, message_id).created_at
    assert after["edited"] is None


def test_a_reaction_moves_the_channels_snapshot(db, ann, general):
    message_id = chat.send_message(db, general, ann, "hi")
    first = listing.snapshot(db, general)
    reactions.toggle_reaction(db, message_id, ann, "👀")
    second = listing.snapshot(db, general)
    assert second.version != first.version
    sent = listing.Sent()
    sent.changed(first)
    (fresh,) = sent.changed(second)  # the push carries the one entry that changed
    assert '"👀"' in fresh


@pytest.mark.parametrize("emoji", ["👍", "❤️", "👍🏽", "🇫🇷", "👩‍👩‍👧", "1️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", " 🎉 "])
def test_any_emoji_is_taken(db, ann, general, emoji):
    message_id = chat.send_message(db, general, ann, "hi")
    assert reactions.toggle_reaction(db, message_id, ann, emoji)
    assert reactions.reactions_for(db, general)[message_id][0]["emoji"] == emoji.strip()


@pytest.mark.parametrize("bad", ["", "  ", "lol", "+1", "👍 👍", "a👍", "\u200d", "\u0301", None, 7, "🎉" * 17])
def test_text_is_not_a_reaction(db, ann, general, bad):
    message_id = chat.send_message(db, general, ann, "hi")
    with pytest.raises(ValidationError):
        reactions.toggle_reaction(db, message_id, ann, bad)


def test_a_deleted_message_takes_no_reaction(db, ann, bob, general):
    message_id = chat.send_message(db, general, ann, "oops")
    edits.delete_message(db, message_id, ann)
    with pytest.raises(ValidationError, match="deleted"):
        reactions.toggle_reaction(db, message_id, bob, "👍")
    with pytest.raises(NotFound):
        reactions.toggle_reaction(db, 999_999, bob, "👍")
    with pytest.raises(NotFound):
        reactions.toggle_reaction(db, message_id, 999_999, "👍")


def test_eight_threads_toggling_at_once_end_consistent(db, general):
    people = [chat.create_user(db, f"Person {i}") for i in range(8)]
    message_id = chat.send_message(db, general, people[0], "react to me")
    chat.list_messages(db, general)  # the cache holds the channel: each toggle must update it in order
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def toggler(i: int) -> None:
        try:
            start.wait()
            for _ in range(i + 1):  # person i toggles 👍 i + 1 times: on for even i
                reactions.toggle_reaction(db, message_id, people[i], "👍")
            for _ in range(3):  # and ❤️ three times on the same person: on
                reactions.toggle_reaction(db, message_id, people[0], "❤️")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=toggler, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    thumbs = sorted(people[i] for i in range(8) if (i + 1) % 2)
    hearts_on = (8 * 3) % 2 == 1
    stored = db.rows("SELECT user_id FROM reactions WHERE message_id = ? AND emoji = '👍' ORDER BY user_id", [message_id])
    assert [row[0] for row in stored] == thumbs
    assert db.one("SELECT count(*) FROM reactions WHERE emoji = '❤️'")[0] == int(hearts_on)
    cached = chat.list_messages(db, general)[0]
    assert cached == chat.read_messages_uncached(db, general)[0]  # the cache kept the last state, not an earlier one
    assert sorted(next(g for g in listing.entry(db, cached)["reactions"] if g["emoji"] == "👍")["by"]) == thumbs
    assert db.one("SELECT count(*) FROM message_acts WHERE message_id = ?", [message_id])[0] == 36 + 24


def test_thumbs_on_ai_replies_are_feedback_per_model_and_channel(db, ann, bob):
    general = chat.create_channel(db, "general")
    ids = []
    for text in ("one", "two"):
        message_id = chat.send_message(db, general, ann, text)
        job = jobs.claim_next_job(db)
        replies.record_request(db, job.reply_id, [{"role": "user", "content": text}], "gpt-4o")
        replies.finish_reply(db, job, f"answer {text}")
        ids.append((message_id, job.reply_id))
    reactions.toggle_reaction(db, ids[0][1], ann, "👍")
    reactions.toggle_reaction(db, ids[0][1], bob, "👍")
    reactions.toggle_reaction(db, ids[1][1], bob, "👎")
    reactions.toggle_reaction(db, ids[1][0], bob, "👍")  # on a person's message: not feedback
    frame = tables.ai_feedback(db)
    rows = frame.to_dict("records")
    assert rows == [{"model": "gpt-4o", "channel": "general", "replies": 2, "👍": 2, "👎": 1}]


def test_a_reaction_edit_and_delete_reach_another_replica(pg_url):
    """Two processes' worth of Database on one Postgres: each change reaches the other's cached list (NOTIFY)."""
    import time

    from core.store import connect

    one, two = connect(pg_url), connect(pg_url)
    try:
        ann = chat.create_user(one, "Ann")
        channel = chat.create_channel(one, "general", reply_policy="off")
        message_id = chat.send_message(one, channel, ann, "hello")
        assert chat.list_messages(two, channel)[0].id == message_id  # the other replica caches the channel

        def seen(check):
            deadline = time.monotonic() + 10
            while not check(chat.list_messages(two, channel)[0]):
                assert time.monotonic() < deadline, chat.list_messages(two, channel)[0]
                time.sleep(0.02)

        reactions.toggle_reaction(one, message_id, ann, "👍")
        seen(lambda m: reactions.parse(m.reactions) == [{"emoji": "👍", "count": 1, "by": [ann], "names": ["Ann"]}])
        edits.edit_message(one, message_id, ann, "hello, edited")
        seen(lambda m: m.content == "hello, edited" and m.edited_at is not None)
        edits.delete_message(one, message_id, ann)
        seen(lambda m: m.deleted_at is not None and m.content == "" and m.reactions is None)
    finally:
        one.close()
        two.close()
