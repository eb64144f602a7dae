"""Cut streams retried, refusals told apart (issue 19): real DuckDB files, the real openai SDK against
tests/fake_openai.py over HTTP, the Responder answering."""
from __future__ import annotations

import time

import pytest
from fake_openai import Script

from core import usage
from core.chat import create_channel, create_user, send_message, update_channel
from core.tools import steps_of
from test_ai import ai_settings, reply_to, responders, running_jobs, settled  # noqa: F401

CLOSED = "The AI service closed the stream before the reply was finished."
UNREADABLE = "The AI service sent a part of the reply that could not be read, so the reply ends there."
TOO_LONG = ("The conversation is too long for this model. Start a new channel, or ask an admin to raise the "
            "model's context size (or lower AI_CONTEXT_TOKENS).")
TOOLS_OFF = "The AI server does not take tools for gpt-4o, so the AI answered without searching."
DEADLINE = 2.0  # seconds: AI_TIMEOUT_SECONDS where a test holds a reply to its deadline
BUDGET = 4000  # AI_CONTEXT_TOKENS in the context tests: the whole conversation fits, half of it does not
LONG_MESSAGE = " ".join(["lunch and the weather again"] * 40)  # 200 words, ~260 estimated tokens
CONTEXT_WORDS = 1500  # the fake's context (in words): the whole conversation (~1800) is over it, half under


def ask(db, text: str = "Tell me something") -> int:
    """A user asks in a new channel; return the reply id."""
    ann, channel = create_user(db, "Ann"), create_channel(db, "general")
    return reply_to(db, send_message(db, channel, ann, text))


def long_conversation(db) -> int:
    """Nine long messages, then a question to the AI; return the reply id."""
    ann, channel = create_user(db, "Ann"), create_channel(db, "general")
    update_channel(db, channel, reply_policy="off")
    for _ in range(9):
        send_message(db, channel, ann, LONG_MESSAGE)
    update_channel(db, channel, reply_policy="every")
    return reply_to(db, send_message(db, channel, ann, "@ai what did we talk about?"))


def labels(reply) -> list[str]:
    return [step["label"] for step in steps_of(reply)]


# a stream that ends early ---------------------------------------------------------
BEFORE_TEXT = {
    "ends cleanly without a finish reason": Script(chunks=["lost ", "words"], end_after=0),
    "connection dropped": Script(chunks=["lost ", "words"], cut_after=0),
    "unreadable event": Script(chunks=["lost ", "words"], malformed_after=0),
}


@pytest.mark.parametrize("fault", BEFORE_TEXT)
def test_a_stream_that_ends_before_any_text_is_retried_once_and_answers(db, fake_openai, responders, fault):
    fake_openai.push(BEFORE_TEXT[fault], Script(text="The whole answer."))
    reply_id = ask(db)
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, reply.error, steps_of(reply)) == ("complete", "The whole answer.", None, [])
    assert len(fake_openai.requests) == 2
    assert fake_openai.requests[0]["messages"] == fake_openai.requests[1]["messages"]  # the same request again
    assert len(usage.of_reply(db, reply_id)) == 2  # both requests are charged
    assert running_jobs(db) == 0


ONCE_ONLY = {"ends cleanly without a finish reason": CLOSED, "connection dropped": CLOSED,
             "unreadable event": UNREADABLE}


@pytest.mark.parametrize("fault", ONCE_ONLY)
def test_the_retry_is_made_once_only(db, fake_openai, responders, fault):
    reason = ONCE_ONLY[fault]
    fake_openai.push(BEFORE_TEXT[fault], BEFORE_TEXT[fault], Script(text="never asked for"))
    reply_id = ask(db)
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, reply.error) == ("error", "", reason)
    assert len(fake_openai.requests) == 2


AFTER_TEXT = {
    "ends cleanly without a finish reason": (Script(chunks=["one ", "two ", "three ", "four"], end_after=3), CLOSED),
    "connection dropped": (Script(chunks=["one ", "two ", "three ", "four"], cut_after=3), CLOSED),
    "unreadable event": (Script(chunks=["one ", "two ", "three ", "four"], malformed_after=3), UNREADABLE),
}


@pytest.mark.parametrize("fault", AFTER_TEXT)
def test_after_text_was_kept_the_reply_ends_with_the_text_and_a_reason(db, fake_openai, responders, fault):
    script, reason = AFTER_TEXT[fault]
    fake_openai.push(script, Script(text="never asked for"))
    reply_id = ask(db)
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, reply.error) == ("error", "one two three ", reason)
    assert len(fake_openai.requests) == 1  # the person presses Retry if they want more


def test_an_error_event_before_any_text_is_not_retried(db, fake_openai, responders):
    fake_openai.push(Script(chunks=["lost"], error_after=0, error_message="The model is overloaded."),
                     Script(text="never asked for"))
    reply_id = ask(db)
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.error) == ("error", "The AI service reported an error: The model is overloaded.")
    assert len(fake_openai.requests) == 1


def test_the_retry_gets_only_the_time_left(db, fake_openai, responders):
    fake_openai.push(Script(chunks=["lost"], end_after=0, delay=1.2), Script(hang=True))
    reply_id = ask(db)
    responders(ai_settings(fake_openai, ai_timeout=DEADLINE))
    started = time.monotonic()
    reply = settled(db, reply_id, timeout=DEADLINE + 5)
    assert time.monotonic() - started <= DEADLINE + 1.0
    assert (reply.status, reply.error) == ("error", "No answer from the AI service within 2 s. Try again.")
    assert len(fake_openai.requests) == 2


# refusals told apart -------------------------------------------------------------
def test_a_context_overflow_is_tried_once_with_half_the_budget(db, fake_openai, responders):
    fake_openai.context_limit = CONTEXT_WORDS
    fake_openai.push(Script(text="We talked about lunch."), Script(text="Hello again."))
    reply_id = long_conversation(db)
    responders(ai_settings(fake_openai, ai_context_tokens=BUDGET))
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, reply.error) == ("complete", "We talked about lunch.", None)
    first, second = fake_openai.requests
    assert len(second["messages"]) < len(first["messages"]) == 11  # persona, nine long messages, the question
    assert first["tools"] and second["tools"]  # the tools were never blamed
    left_out = 11 - len(second["messages"])
    note = f"To fit the {BUDGET // 2:,}-token budget: left out the {left_out} oldest of the recent messages."
    assert labels(reply) == [note]
    assert TOOLS_OFF not in labels(reply)

    # the next reply starts from the whole budget again, tools and all
    fake_openai.context_limit = None
    ann = create_user(db, "Bob")
    again = settled(db, reply_to(db, send_message(db, reply.channel_id, ann, "@ai and now?")))
    assert (again.status, again.content) == ("complete", "Hello again.")
    assert fake_openai.requests[-1]["tools"]


def test_a_second_context_overflow_ends_with_a_plain_sentence(db, fake_openai, responders):
    fake_openai.context_limit = 10  # no request fits
    reply_id = long_conversation(db)
    responders(ai_settings(fake_openai, ai_context_tokens=BUDGET))
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, reply.error) == ("error", "", TOO_LONG)
    first, second = fake_openai.requests
    assert len(second["messages"]) < len(first["messages"])
    assert first["tools"] and second["tools"]
    assert TOOLS_OFF not in labels(reply)
    assert fake_openai.pending == 0


@pytest.mark.parametrize("refusal", [
    Script(status=400, error_code="context_length_exceeded", error_param="messages", error_message="Too long."),
    Script(status=400, error_message=("This model's maximum context length is 4096 tokens. However, you "
                                      "requested 5120 tokens (5000 in the messages, 120 in the completion).")),
    Script(status=400, error_message="the request exceeds the available context size, try increasing it"),
], ids=["openai code", "vllm words", "llama.cpp words"])
def test_a_context_overflow_is_known_by_its_code_or_its_words(db, fake_openai, responders, refusal):
    fake_openai.push(refusal, Script(text="Short enough now."))
    reply_id = long_conversation(db)
    responders(ai_settings(fake_openai, ai_context_tokens=BUDGET))
    reply = settled(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "Short enough now.")
    first, second = fake_openai.requests
    assert len(second["messages"]) < len(first["messages"]) and second["tools"]
    assert TOOLS_OFF not in labels(reply)


@pytest.mark.parametrize("refusal", ["reject_tools", "ollama words"])
def test_a_refusal_about_tools_still_switches_them_off_for_the_model(db, fake_openai, responders, refusal):
    if refusal == "reject_tools":  # OpenAI's body: param "tools", code "unsupported_parameter"
        fake_openai.reject_tools = True
    else:  # no code, no param: only the words say it
        fake_openai.push(Script(status=400, error_message="registry.ollama.ai/library/gpt-4o does not support tools"))
    fake_openai.push(Script(text="Plain answer one."), Script(text="Plain answer two."))
    reply_id = ask(db, "Hello")
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.content, labels(reply)) == ("complete", "Plain answer one.", [TOOLS_OFF])
    ann = create_user(db, "Bob")
    settled(db, reply_to(db, send_message(db, reply.channel_id, ann, "Hello again")))
    assert ["tools" in r for r in fake_openai.requests] == [True, False, False]


def test_any_other_refusal_ends_the_reply_and_keeps_the_tools(db, fake_openai, responders):
    fake_openai.push(Script(status=400, error_param="messages", error_message="Invalid 'messages[1].tool_calls'."),
                     Script(text="Answered with tools on."))
    reply_id = ask(db)
    responders()
    reply = settled(db, reply_id)
    assert (reply.status, reply.error) == (
        "error", "The AI service refused the request (HTTP 400): Invalid 'messages[1].tool_calls'.")
    assert steps_of(reply) == [] and len(fake_openai.requests) == 1
    ann = create_user(db, "Bob")
    again = settled(db, reply_to(db, send_message(db, reply.channel_id, ann, "Hello again")))
    assert again.status == "complete" and fake_openai.requests[-1]["tools"]
