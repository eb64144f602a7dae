"""The Responder end to end: real DuckDB files, the real openai SDK against tests/fake_openai.py over HTTP."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import openai
import pytest
from fake_openai import Script

from core.ai import Responder
from core.chat import (
    DEFAULT_PERSONA,
    create_channel,
    create_user,
    get_message,
    list_messages,
    reply_context,
    send_message,
    update_channel,
)
from core.config import Settings
from core.replies import asked_by, retry_reply, stop_reply
from core.store import connect

HERE = os.path.dirname(os.path.abspath(__file__))
ENDED = ("complete", "error")
NO_KEY_REPLY = (
    "AI replies are off: no OPENAI_API_KEY is set. "
    "Add it to the environment or .streamlit/secrets.toml, then press Retry."
)


@pytest.fixture
def responders(db, fake_openai):
    """Start Responders on the test database; all are stopped before the server and the database close."""
    started = []

    def start(settings: Settings | None = None, client=None) -> Responder:
        settings = settings or ai_settings(fake_openai)
        responder = Responder(db, settings, client).start()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        responder.stop(grace=0)


def ai_settings(fake, **overrides) -> Settings:
    """Settings pointing at the fake server, as OPENAI_API_KEY and OPENAI_BASE_URL would."""
    return Settings(openai_api_key="test-key", openai_base_url=fake.base_url, **overrides)


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def reply_to(db, message_id: int) -> int:
    return db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [message_id])[0]


def settled(db, reply_id: int, timeout: float = 10.0):
    """Wait until the reply ended and its job is done; return the message."""

    def done():
        message = get_message(db, reply_id)
        jobs = db.rows("SELECT state FROM ai_jobs WHERE reply_id = ?", [reply_id])
        return message if message.status in ENDED and all(state == "done" for (state,) in jobs) else None

    return wait_until(done, timeout, f"reply {reply_id} to end")


def ai_messages(db, channel_id: int) -> list:
    return [m for m in list_messages(db, channel_id, 1000) if m.is_ai]


def running_jobs(db) -> int:
    return db.one("SELECT count(*) FROM ai_jobs WHERE state = 'running'")[0]


def asker(db, reply_id: int) -> int:
    """The one person who asked for a reply (and so may stop or retry it)."""
    (who,) = asked_by(db, reply_id)
    return who


def one_message(db, text: str = "Hello @ai, how are you?"):
    """A user and a channel with one message; return (channel id, reply id)."""
    user = create_user(db, "Ann")
    channel = create_channel(db, "general")
    return channel, reply_to(db, send_message(db, channel, user, text))


# the original's flow ------------------------------------------------------------
def test_two_users_twelve_messages_each_answered_with_recent_context(db, fake_openai, responders):
    ann, bob = create_user(db, "Ann"), create_user(db, "Bob")
    channel = create_channel(db, "general")
    fake_openai.push(*(Script(text=f"Reply number {i}.") for i in range(1, 13)))
    responders()
    sent = []
    for i in range(1, 13):
        author, name = (ann, "Ann") if i % 2 else (bob, "Bob")
        reply = settled(db, reply_to(db, send_message(db, channel, author, f"Message {i} from {name}")))
        assert (reply.status, reply.content, reply.error) == ("complete", f"Reply number {i}.", None)
        sent += [{"role": "user", "content": f"{name}: Message {i} from {name}"}]
        sent += [{"role": "assistant", "content": f"Reply number {i}."}]

    last = fake_openai.requests[-1]
    system = {"role": "system", "content": DEFAULT_PERSONA.format(channel="general")}
    assert last["messages"] == [system, *sent[-11:-1]]  # the 10 finished messages before the last reply
    assert last["model"] == "gpt-4o" and last["stream"] is True
    assert last["stream_options"] == {"include_usage": True}
    assert reply_context(db, reply.id) == last["messages"]
    assert len(fake_openai.requests) == 12
    assert reply.prompt_tokens > 0 and reply.completion_tokens == 3
    assert reply.ttft_ms > 0 and reply.total_ms >= reply.ttft_ms
    assert len(ai_messages(db, channel)) == 12


def test_persona_is_the_system_prompt_else_the_default_names_the_channel(db, fake_openai, responders):
    ann = create_user(db, "Ann")
    pirates = create_channel(db, "pirates", persona="You are a pirate. Answer in pirate speak.")
    general = create_channel(db, "general")
    responders()

    def system_sent(channel, text="Hi there"):
        settled(db, reply_to(db, send_message(db, channel, ann, text)))
        return fake_openai.requests[-1]["messages"][0]

    assert system_sent(pirates) == {"role": "system", "content": "You are a pirate. Answer in pirate speak."}
    default = system_sent(general)
    assert default == {"role": "system", "content": DEFAULT_PERSONA.format(channel="general")}
    assert "general" in default["content"]
    update_channel(db, general, persona="Be brief.")
    assert system_sent(general)["content"] == "Be brief."
    update_channel(db, general, persona=None)
    assert system_sent(general) == default

    update_channel(db, general, reply_policy="mention")
    send_message(db, general, ann, "No reply wanted here")
    settled(db, reply_to(db, send_message(db, general, ann, "@ai what now?")))
    assert len(fake_openai.requests) == 5
    assert fake_openai.requests[-1]["messages"][-1] == {"role": "user", "content": "Ann: @ai what now?"}


# streaming ---------------------------------------------------------------------
def test_reply_streams_pending_then_streaming_then_complete_with_few_writes(db, fake_openai, responders):
    words = [f"word{i} " for i in range(16)]
    fake_openai.push(Script(chunks=words, delay=0.2, chunk_delay=0.1))
    channel, reply_id = one_message(db)
    responders()
    seen = []  # (status, content, updated_at) each time the reply changed, as a page polling would see it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = next(m for m in list_messages(db, channel) if m.id == reply_id)
        state = (message.status, message.content, message.updated_at)
        if not seen or seen[-1] != state:
            seen.append(state)
        if message.status in ENDED:
            break
        time.sleep(0.005)

    statuses = [s for i, (s, _, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
    assert statuses == ["pending", "streaming", "complete"]
    final = "".join(words)
    assert seen[-1][1] == final
    partial = [content for status, content, _ in seen if status == "streaming"]
    assert partial[0] and partial[0] != final  # text visible before the end
    assert all(final.startswith(p) for p in partial)

    writes = sorted({at for status, _, at in seen if status == "streaming"})
    streaming_seconds = (seen[-1][2] - writes[0]).total_seconds()
    assert streaming_seconds >= 1.2
    assert len(writes) >= 3  # the text grows while it streams ...
    gaps = [(b - a).total_seconds() for a, b in zip(writes, writes[1:])]
    assert min(gaps) >= 0.25  # ... but never more than 4 writes in a second, not one per token
    assert len(writes) <= 1 + 4 * streaming_seconds


# failures ----------------------------------------------------------------------
FAULTS = {
    "rate limit after retries": (
        [Script(status=429, retry_after=0.01, repeat=3)],
        {},
        3,
        ("error", "The AI service is busy (rate limit). Try again in a moment.", ""),
    ),
    "server error after retries": (
        [Script(status=500, retry_after=0.01, repeat=3)],
        {},
        3,
        ("error", "The AI service had an error (HTTP 500). Try again.", ""),
    ),
    "server error then success": (
        [Script(status=500, retry_after=0.01), Script(text="Recovered just fine.")],
        {},
        2,
        ("complete", None, "Recovered just fine."),
    ),
    "hang": (
        [Script(hang=True)],
        {"ai_timeout": 1.0, "max_retries": 0},
        1,
        ("error", "No answer from the AI service within 1 s. Try again.", ""),
    ),
    "trickle past the timeout": (
        [Script(chunks=["drip "] * 20, chunk_delay=0.25)],
        {"ai_timeout": 1.0},
        1,
        ("error", "The AI service did not finish the reply within 1 s.", "drip "),
    ),
    "stream cut mid-way": (
        [Script(chunks=["one ", "two ", "three ", "four"], cut_after=2)],
        {},
        1,
        ("error", "The AI service closed the stream before the reply was finished.", "one two "),
    ),
    "length limit": (
        [Script(text="A reply that got cu", finish_reason="length")],
        {},
        1,
        ("error", "The reply was cut off at the model's length limit.", "A reply that got cu"),
    ),
    "empty reply": (
        [Script(text="")],
        {},
        1,
        ("error", "The AI returned an empty reply.", ""),
    ),
    "bad key": (
        [Script(status=401)],
        {},
        1,
        ("error", "The AI service refused the API key. Check OPENAI_API_KEY.", ""),
    ),
    "unknown model": (
        [Script(status=404)],
        {},
        1,
        ("error", "The AI service answered HTTP 404 for the model 'gpt-4o'. "
         "Check OPENAI_MODEL and OPENAI_BASE_URL.", ""),
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_ends_with_a_readable_reason(db, fake_openai, responders, fault):
    scripts, options, requests, (status, error, content) = FAULTS[fault]
    fake_openai.push(*scripts)
    timeout = options.get("ai_timeout", 60.0)
    client = None  # the Responder builds it from the settings, with the SDK's 2 retries
    if "max_retries" in options:
        client = fake_openai.client(timeout=timeout, max_retries=options["max_retries"])
    channel, reply_id = one_message(db)
    responders(ai_settings(fake_openai, ai_timeout=timeout), client)

    reply = settled(db, reply_id)
    assert (reply.status, reply.error) == (status, error)
    if fault == "trickle past the timeout":
        assert reply.content.startswith(content) and reply.content != "drip " * 20
    else:
        assert reply.content == content
    assert len(fake_openai.requests) == requests
    assert len(ai_messages(db, channel)) == 1
    assert running_jobs(db) == 0


# one deadline per reply (issue 13) ------------------------------------------------
DEADLINE = 2.0  # seconds: AI_TIMEOUT_SECONDS in these tests
STREAM_FAULTS = {
    "hang before any answer": (
        [Script(hang=True)],
        1,
        ("No answer from the AI service within 2 s. Try again.", ""),
    ),
    "503 asking to wait longer than the deadline": (
        [Script(status=503, retry_after=30)],
        1,
        ("The AI service is busy (HTTP 503) and asked to wait 30 s, more than the 2 s a reply may take. "
         "Try again later.", ""),
    ),
    "429 asking to wait longer than the deadline": (
        [Script(status=429, retry_after=3600)],
        1,
        ("The AI service is busy (rate limit) and asked to wait 3600 s, more than the 2 s a reply may take. "
         "Try again later.", ""),
    ),
    "503 whose second wait crosses the deadline": (
        [Script(status=503, retry_after=1.2, repeat=2)],
        2,
        (re.compile(r"The AI service was busy \(HTTP 503\); gave up after 1\.\d s\. Try again later\."), ""),
    ),
    "busy, then a hang on the retry": (  # the second try gets only the time left
        [Script(status=503, retry_after=0.5), Script(hang=True)],
        2,
        ("No answer from the AI service within 2 s. Try again.", ""),
    ),
    "chunks that each arrive in time but not the whole": (  # each read waits 1.9 s, less than a per-try timeout
        [Script(chunks=["slow ", "and ", "steady"], chunk_delay=1.9)],
        1,
        ("The AI service did not finish the reply within 2 s.", ("slow and ", "slow ")),  # "and " comes at 1.9 s
    ),
    "malformed event mid-stream": (
        [Script(chunks=["Half ", "an ", "answer ", "then ", "garbage"], malformed_after=3)],
        1,
        ("The AI service sent a part of the reply that could not be read, so the reply ends there.",
         "Half an answer "),
    ),
    "error event mid-stream": (
        [Script(chunks=["Half ", "an ", "answer ", "then ", "an error"], error_after=3,
                error_message="The server had an error while processing your request.")],
        1,
        ("The AI service reported an error: The server had an error while processing your request.",
         "Half an answer "),
    ),
    "connection dropped mid-stream": (
        [Script(chunks=["Half ", "an ", "answer ", "then ", "nothing"], cut_after=3)],
        1,
        ("The AI service closed the stream before the reply was finished.", "Half an answer "),
    ),
}


@pytest.mark.parametrize("fault", STREAM_FAULTS)
def test_reply_ends_by_its_deadline_keeping_its_text_with_a_reason(db, fake_openai, responders, fault):
    scripts, requests, (error, content) = STREAM_FAULTS[fault]
    fake_openai.push(*scripts)
    ann, channel = create_user(db, "Ann"), create_channel(db, "general")
    responder = responders(ai_settings(fake_openai, ai_timeout=DEADLINE))
    started = time.monotonic()
    reply_id = reply_to(db, send_message(db, channel, ann, "Tell me something"))
    reply = settled(db, reply_id, timeout=DEADLINE + 5)
    elapsed = time.monotonic() - started

    assert elapsed <= DEADLINE + 1.0, f"the reply took {elapsed:.2f} s"
    assert reply.status == "error"
    assert error.fullmatch(reply.error) if isinstance(error, re.Pattern) else reply.error == error
    assert reply.content in content if isinstance(content, tuple) else reply.content == content
    assert len(fake_openai.requests) == requests
    assert [m.id for m in ai_messages(db, channel)] == [reply_id]  # exactly one reply
    assert running_jobs(db) == 0
    wait_until(lambda: responder.status()["running"] == 0, 2, "the worker to be free")


def test_the_sdk_would_have_run_past_the_deadline(fake_openai):
    """The reason for the Responder's own retries: the SDK sleeps out a Retry-After far beyond any deadline."""
    fake_openai.push(Script(status=503, retry_after=3), Script(text="late"))
    client = fake_openai.client(timeout=DEADLINE, max_retries=1)
    started = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - started >= 3


def test_responder_holds_the_deadline_in_the_clients_connections(db, fake_openai):
    from core.deadline import _Backend

    for client in (None, fake_openai.client()):
        responder = Responder(db, ai_settings(fake_openai), client)
        assert isinstance(responder.client._client._transport._pool._network_backend, _Backend)
        assert responder.client.max_retries == 0


def test_credentials_in_the_base_url_never_reach_a_reply_or_the_logs(db, responders, caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(openai_api_key="k", openai_base_url=f"http://proxyuser:s3cret-pw@127.0.0.1:{port}/v1")
    channel, reply_id = one_message(db)
    with caplog.at_level(logging.DEBUG):
        responder = responders(settings)
        reply = settled(db, reply_id)
    assert (reply.status, reply.error) == ("error", f"Could not reach the AI service at 127.0.0.1:{port}.")
    assert responder.status()["base_url"] == f"127.0.0.1:{port}"
    assert any("127.0.0.1" in record.getMessage() for record in caplog.records)  # httpx2 logged the request
    assert "s3cret" not in caplog.text and "proxyuser" not in caplog.text
    assert "s3cret" not in str(db.rows("SELECT * FROM messages"))


def test_safe_url_removes_user_and_password_from_every_url_in_a_text():
    from core.ai import safe_url

    text = "at https://bob:pa%40ss@proxy.example:8443/v1 and http://tok@h/x, not at mail bob@example.com"
    assert safe_url(text) == "at https://proxy.example:8443/v1 and http://h/x, not at mail bob@example.com"


def test_unreachable_server_names_the_host(db, responders):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    channel, reply_id = one_message(db)
    responders(Settings(), client)
    reply = settled(db, reply_id)
    assert (reply.status, reply.error) == ("error", f"Could not reach the AI service at 127.0.0.1:{port}.")
    assert running_jobs(db) == 0


def test_unexpected_failure_is_logged_and_shown_without_a_stack_trace(db, responders, caplog):
    def create(**_):
        raise RuntimeError("boom: internal detail")

    # A stand-in collaborator that fails in a way the SDK never does.
    completions = SimpleNamespace(create=create)
    client = SimpleNamespace(base_url="http://odd.example/v1", chat=SimpleNamespace(completions=completions))
    channel, reply_id = one_message(db)
    with caplog.at_level(logging.ERROR, logger="core.ai"):
        responders(Settings(), client)
        reply = settled(db, reply_id)
    assert reply.status == "error"
    assert reply.error == (
        "Something went wrong while writing the AI reply (the error was logged). Press Retry to try again."
    )
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    assert running_jobs(db) == 0


# retry and stop ----------------------------------------------------------------
def test_cut_stream_keeps_partial_text_and_retry_completes_in_place(db, fake_openai, responders):
    fake_openai.push(Script(chunks=["one ", "two ", "three"], cut_after=2), Script(text="The full answer."))
    channel, reply_id = one_message(db)
    responders()
    first = settled(db, reply_id)
    assert (first.status, first.content) == ("error", "one two ")

    assert retry_reply(db, reply_id, asker(db, reply_id)) is True
    again = settled(db, reply_id)
    assert (again.status, again.content, again.error) == ("complete", "The full answer.", None)
    assert [m.id for m in ai_messages(db, channel)] == [reply_id]
    assert len(fake_openai.requests) == 2
    assert fake_openai.requests[0]["messages"] == fake_openai.requests[1]["messages"]


def test_double_retry_makes_exactly_one_new_request(db, fake_openai, responders):
    fake_openai.push(Script(status=500, retry_after=0.01, repeat=3), Script(text="Second try worked.", delay=0.3))
    channel, reply_id = one_message(db)
    responders()
    assert settled(db, reply_id).status == "error"
    assert retry_reply(db, reply_id, asker(db, reply_id)) is True
    assert retry_reply(db, reply_id, asker(db, reply_id)) is False  # already pending: nothing more to do
    reply = settled(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "Second try worked.")
    assert len(fake_openai.requests) == 4
    assert len(ai_messages(db, channel)) == 1


def test_stop_and_retry_in_a_loop_is_charged_every_time(db, fake_openai, responders):
    from core import limits, usage

    words = [f"w{i} " for i in range(60)]
    fake_openai.push(Script(chunks=words, chunk_delay=0.05, repeat=5))  # 3 s of streaming each time
    channel, reply_id = one_message(db)
    responders()
    for attempt in range(1, 6):
        wait_until(lambda: get_message(db, reply_id).content, what="some text")
        assert stop_reply(db, reply_id, asker(db, reply_id)) is True
        settled(db, reply_id)
        wait_until(lambda: len(usage.of_reply(db, reply_id)) == attempt, what=f"attempt {attempt} in the ledger")
        if attempt < 5:
            assert retry_reply(db, reply_id, asker(db, reply_id)) is True
    rows = usage.of_reply(db, reply_id)
    assert len({r["job_id"] for r in rows}) == 5 and all(r["estimated"] for r in rows)  # stopped: no usage chunk
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in rows)
    assert limits.tokens_today(db) == sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert get_message(db, reply_id).prompt_tokens is None  # the reply's own figures were reset; the ledger kept them


def test_stop_while_streaming_keeps_the_text_and_the_worker_stops_reading(db, fake_openai, responders):
    words = [f"w{i} " for i in range(60)]
    fake_openai.push(Script(chunks=words, chunk_delay=0.1))  # 6 s of streaming
    channel, reply_id = one_message(db)
    responder = responders()
    wait_until(lambda: get_message(db, reply_id).content, what="some text")
    assert stop_reply(db, reply_id, asker(db, reply_id)) is True
    stopped = get_message(db, reply_id)
    assert (stopped.status, stopped.stopped) == ("complete", True)
    assert stopped.content and stopped.content != "".join(words)

    # The job ends long before the 6 s stream would: the worker closed the stream at its next write.
    reply = settled(db, reply_id, timeout=2.0)
    assert (reply.status, reply.stopped, reply.content) == ("complete", True, stopped.content)
    wait_until(lambda: responder.status()["running"] == 0, 2, "the worker to be free")
    assert stop_reply(db, reply_id, asker(db, reply_id)) is False


def test_retry_right_after_stop_reruns_the_reply_and_the_stopped_run_writes_nothing(db, fake_openai, responders):
    words = [f"old{i} " for i in range(40)]
    fake_openai.push(Script(chunks=words, chunk_delay=0.1), Script(text="A fresh answer, written slowly.", chunk_delay=0.2))
    channel, reply_id = one_message(db)
    responders()
    wait_until(lambda: get_message(db, reply_id).content, what="some text")
    assert stop_reply(db, reply_id, asker(db, reply_id)) is True
    assert retry_reply(db, reply_id, asker(db, reply_id)) is True  # at once, before the stopped run's worker noticed
    seen = []  # what a reader sees of the retried reply, until it completes

    def retried_reply_done():
        message = get_message(db, reply_id)
        seen.append(message.content)
        return message.status == "complete" and not message.stopped and message

    reply = wait_until(retried_reply_done, what="the retried reply")
    assert not [text for text in seen if "old" in text], "the stopped run wrote into the retried reply"
    assert reply.content == "A fresh answer, written slowly."
    assert len(ai_messages(db, channel)) == 1 and len(fake_openai.requests) == 2
    wait_until(lambda: running_jobs(db) == 0, 3, "every job to end")
    assert get_message(db, reply_id).content == "A fresh answer, written slowly."  # the old run's last words never landed


def test_stop_before_a_worker_is_free_means_no_request(db, fake_openai, responders):
    fake_openai.push(Script(chunks=list("abcdefgh"), chunk_delay=0.1))
    ann, channel = create_user(db, "Ann"), create_channel(db, "general")
    first = reply_to(db, send_message(db, channel, ann, "First"))
    second = reply_to(db, send_message(db, channel, ann, "Second"))
    responders(ai_settings(fake_openai, ai_workers=1))
    wait_until(lambda: get_message(db, first).status == "streaming", what="first reply streaming")
    assert get_message(db, second).status == "pending"
    assert stop_reply(db, second, asker(db, second)) is True
    assert settled(db, first).status == "complete"
    stopped = settled(db, second)
    assert (stopped.status, stopped.error) == ("error", "Stopped before the AI wrote anything.")
    assert len(fake_openai.requests) == 1


# lifecycle ---------------------------------------------------------------------
def test_start_twice_and_stop_twice_are_harmless(db, fake_openai):
    def dispatchers():
        return sum(t.name == "ai-dispatcher" for t in threading.enumerate())

    before = dispatchers()
    responder = Responder(db, ai_settings(fake_openai, ai_workers=2))
    responder.stop()
    responder.start()
    responder.start()
    assert dispatchers() == before + 1
    status = responder.status()
    assert status == {
        "enabled": True,
        "reason": "",
        "model": "gpt-4o",
        "base_url": f"127.0.0.1:{fake_openai.port}",
        "workers": 2,
        "pending": 0,
        "running": 0,
        "started": True,
    }
    responder.stop()
    responder.stop()
    assert responder.status()["started"] is False
    wait_until(lambda: dispatchers() == before, 3, "the dispatcher to end")


def test_stop_lets_a_running_reply_finish(db, fake_openai):
    fake_openai.push(Script(chunks=list("abcdefgh"), chunk_delay=0.1))
    channel, reply_id = one_message(db)
    responder = Responder(db, ai_settings(fake_openai)).start()
    wait_until(lambda: get_message(db, reply_id).status == "streaming", what="streaming")
    responder.stop()
    reply = get_message(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "abcdefgh")


def test_stop_aborts_a_running_reply_and_the_next_start_requeues_it(db, fake_openai, responders):
    fake_openai.push(Script(chunks=["x "] * 40, chunk_delay=0.1), Script(text="Finished after the restart."))
    channel, reply_id = one_message(db)
    # On a shared database the next start takes the job once its lease expired (a process cannot tell
    # its own old jobs from a live twin's); a DuckDB file has one owner, so it takes it at once.
    settings = ai_settings(fake_openai, ai_lease_seconds=1.0)
    first = responders(settings)
    wait_until(lambda: get_message(db, reply_id).content, what="some text")
    first.stop(grace=0)
    assert get_message(db, reply_id).status == "streaming"  # left as it was, for recovery
    assert running_jobs(db) == 1

    responders(settings)
    reply = settled(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "Finished after the restart.")
    assert db.one("SELECT max(attempts) FROM ai_jobs WHERE reply_id = ?", [reply_id])[0] == 2
    assert len(ai_messages(db, channel)) == 1


def test_kill_9_mid_reply_then_restart_finishes_every_reply(tmp_path, fake_openai):
    path = str(tmp_path / "crash.duckdb")
    db = connect(path)
    ann, channel = create_user(db, "Ann"), create_channel(db, "general")
    replies = [reply_to(db, send_message(db, channel, ann, f"Question {i}")) for i in range(3)]
    db.close()
    fake_openai.push(Script(chunks=["slow "] * 100, chunk_delay=0.1))

    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "crash_child.py"), path, fake_openai.base_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "streaming"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    db = connect(path)
    try:
        assert get_message(db, replies[0]).status == "streaming"  # the state the kill left behind
        assert get_message(db, replies[0]).content.startswith("slow ")
        fake_openai.reset()
        responder = Responder(db, ai_settings(fake_openai)).start()
        try:
            ended = [settled(db, reply_id) for reply_id in replies]
        finally:
            responder.stop(grace=0)
        assert [(m.status, m.content) for m in ended] == [("complete", "Hello from the fake model.")] * 3
        # The killed run's job was retired and its reply requeued as a new job carrying the attempt count.
        assert db.rows("SELECT reply_id, state, attempts FROM ai_jobs ORDER BY id") == [
            (replies[0], "done", 1), (replies[1], "done", 1), (replies[2], "done", 1), (replies[0], "done", 2)]
        assert running_jobs(db) == 0
        assert len(fake_openai.requests) == 3
    finally:
        db.close()


def test_eight_workers_answer_forty_replies_once_each(db, fake_openai, responders):
    fake_openai.push(Script(chunks=["All ", "good ", "here."], chunk_delay=0.05, repeat=40))
    ann, bob = create_user(db, "Ann"), create_user(db, "Bob")
    channels = [create_channel(db, f"room-{i}") for i in range(5)]
    sent = {}
    for i in range(40):
        channel, (author, name) = channels[i % 5], [(ann, "Ann"), (bob, "Bob")][i % 2]
        reply_id = reply_to(db, send_message(db, channel, author, f"Question {i}"))
        sent[reply_id] = f"{name}: Question {i}"

    responder = responders(ai_settings(fake_openai, ai_workers=8))
    most_running = 0
    while not all(get_message(db, r).status in ENDED for r in sent):
        most_running = max(most_running, running_jobs(db), responder.status()["running"])
        time.sleep(0.005)
    replies = [settled(db, r) for r in sent]

    assert all((m.status, m.content) == ("complete", "All good here.") for m in replies)
    assert sum(len(ai_messages(db, c)) for c in channels) == 40
    assert len(fake_openai.requests) == 40
    assert sorted(r["messages"][-1]["content"] for r in fake_openai.requests) == sorted(sent.values())
    assert db.rows("SELECT DISTINCT attempts, state FROM ai_jobs") == [(1, "done")]  # none claimed twice
    assert 2 <= most_running <= 8  # in parallel, and never a claimed job waiting for a worker


def test_no_key_replies_end_with_the_reason_and_retry_works_once_a_client_is_set(db, fake_openai, responders):
    responder = responders(Settings(ai_workers=2))
    status = responder.status()
    assert status["enabled"] is False
    assert status["reason"] == "AI replies are off: no OPENAI_API_KEY is set."
    assert (status["model"], status["workers"], status["pending"]) == ("gpt-4o", 2, 0)

    channel, reply_id = one_message(db)
    reply = settled(db, reply_id)
    assert (reply.status, reply.error) == ("error", NO_KEY_REPLY)
    assert fake_openai.requests == []

    responder.stop()
    responders(Settings(), fake_openai.client())
    assert retry_reply(db, reply_id, asker(db, reply_id)) is True
    reply = settled(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "Hello from the fake model.")
    assert len(ai_messages(db, channel)) == 1
