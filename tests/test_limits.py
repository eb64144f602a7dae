"""Rate limits and the AI budget (core/limits.py) on real databases, both backends: counted from the database,
refused sends store nothing and say when, limits hold across a restart and against parallel senders."""
from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

import pytest
from clock import Clock
from fake_openai import Script

from core import chat, limits, replies
from core import tables as t
from core.ai import Responder
from core.config import Settings
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
    with pytest.raises(RateLimited, match=r"^Your messages got 2 AI replies in the last hour, the limit\. "
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


def test_tokens_of_replies_without_usage_are_estimated(cdb, clock):
    ann, general = chat.create_user(cdb, "Ann"), chat.create_channel(cdb, "general")
    chat.send_message(cdb, general, ann, "count me")
    job = replies.claim_next_job(cdb)
    replies.record_request(cdb, job.reply_id, [{"role": "user", "content": "x" * 390}], "gpt-4o")
    replies.fail_reply(cdb, job, "The AI service closed the stream.", content="y" * 40)
    context_chars = len(cdb.one("SELECT context FROM messages WHERE id = ?", [job.reply_id])[0])
    assert limits.tokens_today(cdb) == math.ceil((context_chars + 40) / 4)
    clock.now = START + timedelta(days=1)  # a new UTC day starts at zero
    assert limits.tokens_today(cdb) == 0


def test_usage_per_person(cdb, clock):
    ann, bob = chat.create_user(cdb, "Ann"), chat.create_user(cdb, "Bob")
    chat.create_user(cdb, "Cy")  # never wrote: not listed
    general, quiet = chat.create_channel(cdb, "general"), chat.create_channel(cdb, "quiet", reply_policy="off")
    chat.send_message(cdb, general, ann, "hello")
    replies.finish_reply(cdb, replies.claim_next_job(cdb), "hi", prompt_tokens=30, completion_tokens=5)
    chat.send_message(cdb, general, ann, "again")
    replies.finish_reply(cdb, replies.claim_next_job(cdb), "yes", prompt_tokens=40, completion_tokens=7)
    chat.send_message(cdb, quiet, bob, "just a note")
    usage = t.usage_by_person(cdb)
    assert usage.to_dict("records") == [
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
