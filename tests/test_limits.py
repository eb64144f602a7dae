"""Rate limits and the AI budget (core/limits.py) on real databases, both backends: counted from the database,
refused sends store nothing and say when, limits hold across a restart and against parallel senders."""
from __future__ import annotations

import json
import math
import threading
from datetime import datetime, timedelta

import pytest
from clock import Clock
from fake_openai import Script

from core import accounts, chat, jobs, limits, replies, search, usage
from core import tables as t
from core.ai import Responder
from core.config import Settings
from core.errors import NotFound, ValidationError
from core.limits import Limits, RateLimited
from core.store import connect

START = datetime(2025, 3, 1, 12, 0, 0)


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def cdb(db_target, clock):
    """The test's database (DuckDB file or Postgres) on a clock the test moves."""
    database = connect(db_target, clock=clock)
    yield database
    database.close()


def _counts(db) -> tuple[int, int]:
    return db.one("SELECT count(*) FROM messages")[0], db.one("SELECT count(*) FROM ai_jobs")[0]


def test_the_limit_th_message_passes_and_the_next_is_refused_storing_nothing(cdb, clock):
    ann, quiet = chat.create_user(cdb, "Ann"), chat.create_channel(cdb, "quiet", reply_policy="off")
    rules = Limits(messages_per_minute=3)
    for i in range(3):
        clock.now = START + timedelta(seconds=10 * i)
        chat.send_message(cdb, quiet, ann, f"message {i}", limits=rules)
    before = _counts(cdb)
    clock.now = START + timedelta(seconds=25)
    with pytest.raises(RateLimited) as refused:
        chat.send_message(cdb, quiet, ann, "one too many", limits=rules)
    assert str(refused.value) == ("You have sent 3 messages in the last minute, the limit. "
                                  "You can send again in 35 s.")
    assert refused.value.retry_at == START + timedelta(minutes=1)
    assert _counts(cdb) == before and "one too many" not in [m.content for m in chat.list_messages(cdb, quiet)]
    clock.now = START + timedelta(minutes=1, seconds=1)  # the first message left the window
    chat.send_message(cdb, quiet, ann, "again", limits=rules)
    assert chat.list_messages(cdb, quiet)[0].content == "again"


def test_limits_count_per_person_and_zero_is_off(cdb):
    ann, bob = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Bob")
    quiet = chat.create_channel(cdb, "quiet", reply_policy="off")
    chat.send_message(cdb, quiet, ann, "mine", limits=Limits(messages_per_minute=1))
    chat.send_message(cdb, quiet, bob, "Bob has his own allowance", limits=Limits(messages_per_minute=1))
    for i in range(5):
        chat.send_message(cdb, quiet, ann, f"unlimited {i}", limits=Limits())
    chat.send_message(cdb, quiet, ann, "no limits given", limits=None)


def test_ai_replies_per_hour_refuse_only_sends_that_ask_for_a_reply(cdb, clock):
    ann = chat.create_user(cdb, "Ann")
    every = chat.create_channel(cdb, "every")
    mention = chat.create_channel(cdb, "mention", reply_policy="mention")
    rules = Limits(ai_replies_per_hour=2)
    chat.send_message(cdb, every, ann, "one", limits=rules)
    clock.now = START + timedelta(minutes=10)
    chat.send_message(cdb, mention, ann, "@ai two", limits=rules)
    clock.now = START + timedelta(minutes=20)
    before = _counts(cdb)
    with pytest.raises(RateLimited, match=r"^You asked for 2 AI replies in the last hour, the limit\. "
                                          r"You can send again in 40 min, or now in a channel where"):
        chat.send_message(cdb, every, ann, "three", limits=rules)
    assert _counts(cdb) == before
    chat.send_message(cdb, mention, ann, "no mention, so no reply: this one goes", limits=rules)
    clock.now = START + timedelta(hours=1, seconds=1)
    chat.send_message(cdb, every, ann, "a new hour", limits=rules)


def test_limits_hold_across_a_restart(db_target, clock):
    db = connect(db_target, clock=clock)
    ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
    rules = Limits(messages_per_minute=2)
    chat.send_message(db, quiet, ann, "a", limits=rules)
    chat.send_message(db, quiet, ann, "b", limits=rules)
    db.close()
    reopened = connect(db_target, clock=clock)  # what a restarted app (or another replica) opens
    try:
        with pytest.raises(RateLimited):
            chat.send_message(reopened, quiet, ann, "c", limits=rules)
        assert [m.content for m in chat.list_messages(reopened, quiet)] == ["b", "a"]
    finally:
        reopened.close()


def test_parallel_sends_of_one_person_never_pass_the_limit(cdb):
    ann, quiet = chat.create_user(cdb, "Ann"), chat.create_channel(cdb, "quiet", reply_policy="off")
    rules, outcomes = Limits(messages_per_minute=5), []
    gate = threading.Barrier(12)

    def send(i: int) -> None:
        gate.wait()
        try:
            chat.send_message(cdb, quiet, ann, f"burst {i}", limits=rules)
            outcomes.append("sent")
        except RateLimited:
            outcomes.append("refused")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["sent"] * 5
    assert cdb.one("SELECT count(*) FROM messages")[0] == 5


def test_a_spent_token_budget_ends_the_reply_without_calling_the_model(db, fake_openai):
    fake_openai.default = Script(text="Hello there, this reply uses tokens.")
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    settings = Settings(openai_api_key="test-key", openai_base_url=fake_openai.base_url, ai_tokens_per_day=10)
    responder = Responder(db, settings).start()
    try:
        chat.send_message(db, general, ann, "first")
        first = _wait_ended(db, general)
        assert first.status == "complete" and first.prompt_tokens + first.completion_tokens >= 10
        calls = len(fake_openai.requests)
        chat.send_message(db, general, ann, "second")
        second = _wait_ended(db, general)
    finally:
        responder.stop(grace=0)
    assert second.status == "error" and second.error.startswith(
        "Today's AI budget (10 tokens) is spent; AI replies resume at 00:00 UTC (in ")
    assert len(fake_openai.requests) == calls  # the model was not asked


def _wait_ended(db, channel_id, timeout: float = 10.0):
    import time

    deadline = time.monotonic() + timeout
    while (reply := chat.list_messages(db, channel_id)[0]).status not in ("complete", "error"):
        assert time.monotonic() < deadline, reply
        time.sleep(0.02)
    return reply


def test_tokens_of_requests_without_usage_are_estimated(cdb, clock):
    sent = [{"role": "user", "content": "x" * 390}]
    use = usage.estimate(sent, "y" * 40)
    assert use == usage.Use(math.ceil(len(json.dumps(sent)) / 4), 10, True)
    ann = chat.create_user(cdb, "Ann")
    usage.record(cdb, use, user_id=ann, model="gpt-4o")
    assert limits.tokens_today(cdb) == use.prompt_tokens + 10
    clock.now = START + timedelta(days=1)  # a new UTC day starts at zero
    assert limits.tokens_today(cdb) == 0


def _attempt(db, reply_id, tokens, fail=True):
    """What the worker does for one attempt: claim it, charge its request to the ledger, end it."""
    job = jobs.claim_next_job(db)
    assert job.reply_id == reply_id
    usage.record(db, usage.Use(tokens, 0, False), user_id=job.requested_by, reply_id=reply_id, job_id=job.id)
    if fail:
        replies.fail_reply(db, job, "The AI service had an error (HTTP 500). Try again.")
    return job


def test_each_retry_is_charged_again_and_to_who_pressed_it(cdb, clock):
    ann, boss = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Boss")
    general = chat.create_channel(cdb, "general")
    chat.send_message(cdb, general, ann, "hello")
    reply_id = chat.list_messages(cdb, general)[0].id
    _attempt(cdb, reply_id, 100)
    for _ in range(4):
        assert replies.retry_reply(cdb, reply_id, ann) is True
        _attempt(cdb, reply_id, 100)
    assert replies.retry_reply(cdb, reply_id, boss, admin=True) is True
    job = _attempt(cdb, reply_id, 100, fail=False)
    replies.finish_reply(cdb, job, "At last.", prompt_tokens=100, completion_tokens=0)
    assert limits.tokens_today(cdb) == 600  # six attempts, none erased by a Retry
    assert [u["user_id"] for u in usage.of_reply(cdb, reply_id)] == [ann] * 5 + [boss]
    people = t.usage_by_person(cdb).set_index("person")
    assert people.loc["Ann", "AI tokens"] == 500 and people.loc["Ann", "AI replies"] == 5
    assert people.loc["Boss", "AI tokens"] == 100 and people.loc["Boss", "AI replies"] == 1


def test_a_retry_after_midnight_counts_on_the_new_day(cdb, clock):
    ann, general = chat.create_user(cdb, "Ann"), chat.create_channel(cdb, "general")
    clock.now = START.replace(hour=23, minute=59)
    chat.send_message(cdb, general, ann, "late")
    reply_id = chat.list_messages(cdb, general)[0].id
    _attempt(cdb, reply_id, 70)
    clock.now = START.replace(hour=0, minute=1) + timedelta(days=1)
    assert limits.tokens_today(cdb) == 0
    replies.retry_reply(cdb, reply_id, ann)
    _attempt(cdb, reply_id, 30)
    assert limits.tokens_today(cdb) == 30  # the reply was made yesterday; its retry ran today


def test_a_retry_is_an_ask_held_to_the_pressers_allowance_and_the_budget(cdb, clock):
    ann, boss = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Boss")
    general = chat.create_channel(cdb, "general")
    rules = Limits(ai_replies_per_hour=2, ai_tokens_per_day=1000)
    chat.send_message(cdb, general, ann, "one", limits=rules)
    reply_id = chat.list_messages(cdb, general)[0].id
    _attempt(cdb, reply_id, 10)
    clock.now = START + timedelta(minutes=5)
    replies.retry_reply(cdb, reply_id, ann, limits=rules)  # Ann's second ask this hour
    _attempt(cdb, reply_id, 10)
    with pytest.raises(RateLimited, match=r"^You asked for 2 AI replies in the last hour, the limit\. "
                                          r"You can retry in 55 min\.$"):
        replies.retry_reply(cdb, reply_id, ann, limits=rules)
    with pytest.raises(RateLimited):  # and her next send that wants a reply
        chat.send_message(cdb, general, ann, "two", limits=rules)
    replies.retry_reply(cdb, reply_id, boss, admin=True, limits=rules)  # Boss's own allowance
    _attempt(cdb, reply_id, 1000)
    with pytest.raises(ValidationError, match=r"^Today's AI budget \(1,000 tokens\) is spent"):
        replies.retry_reply(cdb, reply_id, boss, admin=True, limits=rules)
    assert chat.get_message(cdb, reply_id).status == "error"  # refused: nothing changed


def test_a_crash_requeue_is_not_a_new_ask(cdb, clock):
    ann, general = chat.create_user(cdb, "Ann"), chat.create_channel(cdb, "general")
    rules = Limits(ai_replies_per_hour=1)
    chat.send_message(cdb, general, ann, "one", limits=rules)
    job = jobs.claim_next_job(cdb)
    assert jobs.recover_interrupted(cdb, everything=True)["requeued"] == 1
    again = jobs.claim_next_job(cdb)
    assert (again.reply_id, again.requested_by) == (job.reply_id, ann)
    assert cdb.one("SELECT cause FROM ai_jobs WHERE id = ?", [again.id]) == ("requeue",)
    clock.now = START + timedelta(hours=1, seconds=1)
    chat.send_message(cdb, general, ann, "an hour after the send, not after the requeue", limits=rules)


def test_usage_per_person(cdb, clock):
    ann, bob = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Bob")
    chat.create_user(cdb, "Cy")  # never wrote: not listed
    general, quiet = chat.create_channel(cdb, "general"), chat.create_channel(cdb, "quiet", reply_policy="off")
    for text, spent in (("hello", (30, 5)), ("again", (40, 7))):
        chat.send_message(cdb, general, ann, text)
        job = jobs.claim_next_job(cdb)
        usage.record(cdb, usage.Use(*spent, False), user_id=job.requested_by, reply_id=job.reply_id, job_id=job.id)
        replies.finish_reply(cdb, job, "hi", prompt_tokens=spent[0], completion_tokens=spent[1])
    chat.send_message(cdb, quiet, bob, "just a note")
    people = t.usage_by_person(cdb)
    assert people.to_dict("records") == [
        {"person": "Ann", "messages": 2, "AI replies": 2, "AI tokens": 82, "last message": START},
        {"person": "Bob", "messages": 1, "AI replies": 0, "AI tokens": 0, "last message": START},
    ]
    assert t.usage_by_person(cdb, since=START + timedelta(hours=1)).empty


def test_the_chat_page_says_why_and_when_and_stores_nothing_also_after_a_restart(app_test, app_db):
    import streamlit as st

    ann, quiet = chat.create_user(app_db, "Ann"), chat.create_channel(app_db, "quiet", reply_policy="off")
    at = app_test(user_id=ann, channel_id=quiet)
    at.secrets["MESSAGES_PER_MINUTE"] = "2"
    at.run()
    for text in ("one", "two"):
        at.chat_input[0].set_value(text).run()
        assert not at.error
    at.chat_input[0].set_value("three").run()
    assert at.error[0].value.startswith("Your message was not sent. You have sent 2 messages in the last minute, the limit. "
                                        "You can send again in ")
    assert not at.exception
    st.cache_resource.clear()  # the app restarts: a new database object, no memory of the sends
    at.chat_input[0].set_value("four").run()
    assert at.error[0].value.startswith("Your message was not sent. You have sent 2 messages")
    import os

    from views.common import _database

    assert [m.content for m in chat.list_messages(_database(os.environ["CHAT_DB"]), quiet)] == ["two", "one"]


# renames, channels and searches ----------------------------------------------------------------------
def test_renames_per_hour_count_from_the_database_and_say_when(cdb, clock):
    ann = chat.create_user(cdb, "Ann")
    rules = Limits(renames_per_hour=2)
    for i, name in enumerate(("Ann B", "Ann C")):
        clock.now = START + timedelta(minutes=10 * i)
        accounts.rename_user(cdb, ann, name, limits=rules)
    accounts.rename_user(cdb, ann, "Ann C", limits=rules)  # the same name again changes nothing: not counted
    clock.now = START + timedelta(minutes=30)
    with pytest.raises(RateLimited) as refused:
        accounts.rename_user(cdb, ann, "Ann D", limits=rules)
    assert str(refused.value) == ("You have changed your name 2 times in the last hour, the limit. "
                                  "You can change it again in 30 min.")
    assert chat.get_user(cdb, ann).name == "Ann C"
    assert cdb.rows("SELECT user_id, old_name FROM renames ORDER BY id") == [(ann, "Ann"), (ann, "Ann B")]
    accounts.rename_user(cdb, ann, "Ann D", limits=Limits())  # 0 is off
    clock.now = START + timedelta(hours=1, minutes=11)  # the first two left the window; one (Ann D's) is in it
    accounts.rename_user(cdb, ann, "Ann E", limits=rules)


def test_channels_per_hour_count_who_created_them_and_the_app_is_not_counted(cdb, clock):
    ann, bob = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Bob")
    rules = Limits(channels_per_hour=2)
    first = chat.create_channel(cdb, "one", by=ann, limits=rules)
    clock.now = START + timedelta(minutes=20)
    chat.create_channel(cdb, "two", by=ann, limits=rules)
    chat.create_channel(cdb, "made by the app")  # no one asked: nothing counted, created_by NULL
    with pytest.raises(RateLimited) as refused:
        chat.create_channel(cdb, "three", by=ann, limits=rules)
    assert str(refused.value) == ("You have created 2 channels in the last hour, the limit. "
                                  "You can create another in 40 min.")
    assert [c.name for c in chat.list_channels(cdb)] == ["made by the app", "one", "two"]
    chat.create_channel(cdb, "Bob's", by=bob, limits=rules)  # per person
    assert cdb.one("SELECT created_by FROM channels WHERE id = ?", [first]) == (ann,)
    clock.now = START + timedelta(hours=1, seconds=1)
    chat.create_channel(cdb, "three", by=ann, limits=rules)
    with pytest.raises(NotFound):
        chat.create_channel(cdb, "nobody's", by=999, limits=rules)


def test_searches_per_minute_are_counted_in_memory_and_a_repeat_is_free(cdb, clock):
    ann, bob = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Bob")
    general = chat.create_channel(cdb, "general", reply_policy="off")
    chat.send_message(cdb, general, ann, "hello world")
    rules = Limits(searches_per_minute=2)
    assert len(search.search_messages(cdb, "hello", by=ann, limits=rules)) == 1
    clock.now = START + timedelta(seconds=15)
    search.search_messages(cdb, "world", by=ann, limits=rules)
    search.search_messages(cdb, "HELLO", by=ann, limits=rules)  # the page reruns a search it showed: not counted
    with pytest.raises(RateLimited) as refused:
        search.search_messages(cdb, "hello", channel_id=general, by=ann, limits=rules)
    assert str(refused.value) == "You have searched 2 times in the last minute, the limit. You can search again in 45 s."
    search.search_messages(cdb, "other", by=bob, limits=rules)  # per person
    search.search_messages(cdb, "other", limits=rules)  # the AI's tool searches name nobody
    clock.now = START + timedelta(minutes=1)
    search.search_messages(cdb, "hello", channel_id=general, by=ann, limits=rules)
