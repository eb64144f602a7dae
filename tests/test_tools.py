"""The AI's tools, retrieval, budget and per-channel model, end to end: real DuckDB files, the real openai SDK
against tests/fake_openai.py over HTTP, the Responder answering."""
from __future__ import annotations

import json
import time

import pytest
from fake_openai import Script

from core.chat import create_channel, create_user, get_message, reply_context, send_message, update_channel
from core.context import estimate_tokens, message_tokens, tools_tokens
from core.tools import TOOLS, steps_of
from test_ai import ai_messages, ai_settings, reply_to, responders, running_jobs, settled, wait_until  # noqa: F401


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": json.dumps(arguments)}


def history(db, channel, author, count: int, about: str = "") -> None:
    """``count`` user messages in a channel (no AI replies), the first one about ``about``."""
    update_channel(db, channel, reply_policy="off")
    for i in range(count):
        text = about if i == 0 and about else f"Chatter number {i} about lunch and the weather."
        send_message(db, channel, author, text)
    update_channel(db, channel, reply_policy="every")


def tool_messages(request: dict) -> list[dict]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def test_reply_searches_50_messages_back_and_uses_the_answer(db, fake_openai, responders):
    ann, bob = create_user(db, "Ann"), create_user(db, "Bob")
    general = create_channel(db, "general")
    history(db, general, bob, 50, about="The deploy moved to Thursday at 9, after the database upgrade.")
    fake_openai.push(
        Script(text="", tool_calls=[call("search_messages", query="deploy", channel="general")]),
        Script(text="Bob said the deploy moved to Thursday at 9.", delay=1.0),  # the step shows meanwhile
    )
    responders()
    reply_id = reply_to(db, send_message(db, general, ann, "@ai when is the deploy?"))

    def step_line_shown():  # what every window polling the channel sees while the tool's answer is used
        message = get_message(db, reply_id)
        return message.status == "pending" and [s["label"] for s in steps_of(message)]

    assert wait_until(step_line_shown, what="the step line") == ["Searching #general for 'deploy'…"]
    reply = settled(db, reply_id)
    assert (reply.status, reply.content) == ("complete", "Bob said the deploy moved to Thursday at 9.")

    first, second = fake_openai.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["search_messages", "read_messages"]
    assert not any("Thursday" in m["content"] for m in first["messages"])  # 50 back: not in the recent window
    (answer,) = tool_messages(second)
    assert "The deploy moved to Thursday at 9" in answer["content"] and "Bob" in answer["content"]
    asked = second["messages"][-2]
    assert asked["role"] == "assistant" and asked["tool_calls"][0]["function"]["name"] == "search_messages"
    assert answer["tool_call_id"] == asked["tool_calls"][0]["id"]

    (step,) = steps_of(reply)
    assert step["state"] == "done" and step["summary"] == "found 2 messages"  # the note and the question
    assert json.loads(step["arguments"]) == {"query": "deploy", "channel": "general"}
    assert "Thursday at 9" in step["output"]
    assert reply_context(db, reply_id) == second["messages"]  # "Context used": the call and its result
    assert reply.prompt_tokens == sum(r["prompt_tokens"] for r in [_usage(first), _usage(second)])
    assert [m.id for m in ai_messages(db, general)] == [reply_id] and running_jobs(db) == 0


def _usage(request: dict) -> dict:
    from fake_openai import _prompt_tokens

    return {"prompt_tokens": _prompt_tokens(request)}


@pytest.mark.parametrize(
    "arguments, error",
    [
        ('{"query": "deploy", "query": "release"}', "The argument 'query' was given twice."),
        ('{"query": "deploy"', "The arguments were not valid JSON."),
        ('["deploy"]', "The arguments must be a JSON object."),
        ('{"channel": "general"}', "search_messages needs the argument 'query'."),
        ('{"query": 42}', "The argument 'query' must be a text."),
        ('{"query": "deploy", "channel": "nowhere"}', "There is no channel named #nowhere."),
        ('{"query": "deploy", "limit": 5}', "search_messages has no argument 'limit'."),
    ],
)
def test_bad_tool_arguments_end_as_a_readable_step_and_the_reply_goes_on(db, fake_openai, responders, arguments, error):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    fake_openai.push(
        Script(text="", tool_calls=[{"name": "search_messages", "arguments": arguments}]),
        Script(text="I could not search, sorry."),
    )
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai search please")))
    assert (reply.status, reply.content) == ("complete", "I could not search, sorry.")
    (step,) = steps_of(reply)
    assert (step["state"], step["error"]) == ("error", error)
    assert step["arguments"] == arguments
    (told,) = tool_messages(fake_openai.requests[1])
    assert told["content"] == f"Error: {error}"


def test_unknown_tool_and_a_repeated_call_are_readable_steps(db, fake_openai, responders):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    history(db, general, ann, 1, about="The deploy is on Friday.")
    twice = call("search_messages", query="deploy")
    fake_openai.push(
        Script(text="", tool_calls=[{"name": "delete_everything", "arguments": "{}"}, twice]),
        Script(text="", tool_calls=[twice]),
        Script(text="Friday."),
    )
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai when is the deploy?")))
    assert (reply.status, reply.content) == ("complete", "Friday.")
    unknown, first, again = steps_of(reply)
    assert unknown["state"] == "error"
    assert unknown["error"] == "There is no tool named 'delete_everything'; the tools are search_messages, read_messages."
    assert first["state"] == "done" and "found" in first["summary"]
    assert (again["state"], again["error"]) == ("error", "The AI asked for exactly the same thing again.")
    assert first["output"] in again["output"]


def test_text_written_before_a_tool_call_stays_in_the_reply_and_the_next_request(db, fake_openai, responders):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    fake_openai.push(
        Script(text="Let me check. ", tool_calls=[call("search_messages", query="lunch")]),
        Script(text="Nothing about lunch."),
    )
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai any lunch plans?")))
    assert (reply.status, reply.content) == ("complete", "Let me check. Nothing about lunch.")
    asked = fake_openai.requests[1]["messages"][-2]
    assert asked["role"] == "assistant" and asked["content"] == "Let me check. "


def test_read_messages_reads_before_a_message_in_another_channel(db, fake_openai, responders):
    ann, general, ops = create_user(db, "Ann"), create_channel(db, "general"), create_channel(db, "ops")
    history(db, ops, ann, 25)
    anchor = db.one("SELECT min(id) + 15 FROM messages WHERE channel_id = ?", [ops])[0]
    fake_openai.push(
        Script(text="", tool_calls=[call("read_messages", channel="#ops", before=anchor)]),
        Script(text="Lunch, mostly."),
    )
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai what was ops on about?")))
    (step,) = steps_of(reply)
    assert step["label"] == f"Reading #ops before message {anchor}…"
    assert step["summary"] == "read 10 messages"
    told = tool_messages(fake_openai.requests[1])[0]["content"]
    ids = [int(line.split()[1]) for line in told.splitlines()[1:]]
    assert ids == list(range(anchor - 10, anchor))  # the 10 just before, oldest first
    assert told.startswith("10 messages of #ops, oldest first:")


def test_a_server_that_refuses_tools_gets_a_plain_request_once_then_never_tools(db, fake_openai, responders):
    fake_openai.reject_tools = True
    fake_openai.push(Script(text="Plain answer one."), Script(text="Plain answer two."))
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    responders()
    first = settled(db, reply_to(db, send_message(db, general, ann, "Hello")))
    assert (first.status, first.content) == ("complete", "Plain answer one.")
    assert [s["label"] for s in steps_of(first)] == [
        "The AI server does not take tools for gpt-4o, so the AI answered without searching."]
    second = settled(db, reply_to(db, send_message(db, general, ann, "Hello again")))
    assert (second.status, second.content, steps_of(second)) == ("complete", "Plain answer two.", [])
    assert ["tools" in r for r in fake_openai.requests] == [True, False, False]


def test_per_channel_model_is_sent_and_tools_refusal_is_remembered_per_model(db, fake_openai, responders):
    ann = create_user(db, "Ann")
    local, general = create_channel(db, "local"), create_channel(db, "general")
    update_channel(db, local, model="llama3.1")
    assert update_channel(db, local).model == "llama3.1"
    responders()
    settled(db, reply_to(db, send_message(db, local, ann, "Hi")))
    settled(db, reply_to(db, send_message(db, general, ann, "Hi")))
    assert [r["model"] for r in fake_openai.requests] == ["llama3.1", "gpt-4o"]
    assert get_message(db, reply_to(db, db.one("SELECT max(id) FROM messages WHERE author_id IS NOT NULL")[0])).model \
        == "gpt-4o"
    update_channel(db, local, model=None)
    assert update_channel(db, local).model is None


def test_look_further_back_adds_older_related_messages_as_a_marked_note(db, fake_openai, responders):
    ann, bob = create_user(db, "Ann"), create_user(db, "Bob")
    general = create_channel(db, "general")
    history(db, general, bob, 30, about="Our staging database password rotates every Tuesday night.")
    update_channel(db, general, look_back=True)
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "When does the staging password rotate?")))
    sent = fake_openai.requests[0]["messages"]
    assert sent[0]["role"] == "system" and sent[1]["role"] == "system"
    assert sent[1]["content"].startswith("Older messages from this channel that may be relevant, found by search")
    assert "rotates every Tuesday night" in sent[1]["content"]
    assert not any("Tuesday" in m["content"] for m in sent[2:])  # not in the recent window
    (step,) = steps_of(reply)
    assert step["kind"] == "retrieval" and step["label"].startswith("Looked further back: ")
    assert step["output"] == sent[1]["content"]

    update_channel(db, general, look_back=False)
    settled(db, reply_to(db, send_message(db, general, ann, "When does the staging password rotate?")))
    assert [m["role"] for m in fake_openai.requests[1]["messages"]].count("system") == 1


def test_ten_messages_of_one_megabyte_fit_the_budget_keeping_the_newest_start(db, fake_openai, responders):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    update_channel(db, general, reply_policy="off")
    for i in range(9):
        send_message(db, general, ann, f"Old message {i}: " + "lorem ipsum dolor " * 55_000)
    update_channel(db, general, reply_policy="every")
    newest = "The newest question starts here. " + "sit amet consectetur " * 47_000
    assert len(newest.encode()) > 980_000
    budget = 8000
    responders(ai_settings(fake_openai, ai_context_tokens=budget))
    started = time.monotonic()
    reply = settled(db, reply_to(db, send_message(db, general, ann, newest)))
    assert reply.status == "complete"
    assert time.monotonic() - started < 10

    (request,) = fake_openai.requests
    estimated = sum(message_tokens(m) for m in request["messages"]) + tools_tokens(request["tools"])
    assert estimated <= budget
    assert len(json.dumps(request).encode()) < 100_000  # not 10 MB
    last = request["messages"][-1]["content"]
    assert last.startswith("Ann: The newest question starts here. sit amet consectetur")
    assert last.endswith("characters) did not fit in the AI's context]")
    assert [m["role"] for m in request["messages"]] == ["system", "user"]  # every older message left out
    (step,) = steps_of(reply)
    assert step["kind"] == "budget" and step["dropped"] == 9
    assert step["label"].startswith("To fit the 8,000-token budget: left out the 9 oldest of the recent messages; "
                                    "cut the newest message to its first ")


def test_tools_are_offered_within_the_budget_estimate():
    assert 100 < tools_tokens(TOOLS) < 600
    assert estimate_tokens("Searching #general for 'deploy'…") < 20


def test_channel_ai_settings_are_checked_and_listed(db):
    from core.chat import channel_overview, get_channel
    from core.errors import ValidationError

    general = create_channel(db, "general")
    assert (get_channel(db, general).model, get_channel(db, general).look_back) == (None, False)
    update_channel(db, general, model="  gpt-4o-mini ", look_back=True)
    (row,) = channel_overview(db)
    assert (row["model"], row["look_back"]) == ("gpt-4o-mini", True)
    for bad, error in [(42, "The model must be text, such as gpt-4o."),
                       ("gpt 4o", "A model name has no spaces or control characters (e.g. gpt-4o-mini)."),
                       ("m" * 201, "The model name is too long: 201 characters; the limit is 200.")]:
        with pytest.raises(ValidationError) as raised:
            update_channel(db, general, model=bad)
        assert str(raised.value) == error
    with pytest.raises(ValidationError, match="Look further back must be on or off."):
        update_channel(db, general, look_back="yes")
    assert update_channel(db, general, model="").model is None  # empty: back to the app's model
    assert get_channel(db, general).look_back is True


@pytest.mark.parametrize("named", ["Ops", "#ops", "ＯＰＳ", "ops\u200b", "  #Ops  "])
def test_a_channel_named_by_the_model_is_found_as_the_app_compares_names(db, named):
    from core.chat import get_channel
    from core.tools import call as call_tool

    ann, general, ops = create_user(db, "Ann"), create_channel(db, "general"), create_channel(db, "ops")
    send_message(db, ops, ann, "Deploy notes live here.")
    step = call_tool(db, "read_messages", json.dumps({"channel": named}), get_channel(db, general))
    assert step["state"] == "done", step
    assert step["output"].startswith("1 message of #ops, oldest first:\n") and step["summary"] == "read 1 message"
    assert "Deploy notes live here." in step["output"]
    missing = call_tool(db, "read_messages", json.dumps({"channel": "#nowhere"}), get_channel(db, general))
    assert missing["state"] == "error" and missing["error"] == "There is no channel named #nowhere."


# caps ------------------------------------------------------------------------
def test_a_model_asking_for_40_searches_is_capped_and_the_reply_ends_in_time(db, fake_openai, responders):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    history(db, general, ann, 3, about="The deploy is on Friday.")
    forty = [call("search_messages", query=f"word{i}") for i in range(40)]
    fake_openai.push(Script(text="", tool_calls=forty, repeat=2), Script(text="Friday, as far as I can tell."))
    responders(ai_settings(fake_openai, ai_timeout=8.0))
    started = time.monotonic()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai look up forty words")), timeout=12)
    assert time.monotonic() - started < 8.0 + 1.0
    assert (reply.status, reply.content) == ("complete", "Friday, as far as I can tell.")
    ran = [s for s in steps_of(reply) if s.get("kind") == "tool"]
    assert len(ran) == 8  # AI_TOOL_CALLS_PER_REPLY: 4 in each of two rounds (AI_TOOL_CALLS_PER_ROUND)
    capped = [s["label"] for s in steps_of(reply) if s.get("kind") == "fallback"]
    assert capped == ["The AI asked for 36 more searches than a reply may make; they were not run."] * 2
    first, second, third = fake_openai.requests
    told = tool_messages(second)
    assert len(told) == 40  # every call the model made gets an answer, run or not
    assert sum(m["content"].startswith("Error: Not run: at most 4 tool calls") for m in told) == 36
    assert third["tool_choice"] == "none"  # the reply's calls are spent: answer now
    assert len(tool_messages(third)) == 80


def test_the_tool_results_of_one_reply_share_one_part_of_the_budget(db, fake_openai, responders):
    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    update_channel(db, general, reply_policy="off")
    for i in range(60):  # plenty for every search to find a page of long messages
        send_message(db, general, ann, f"deploy note {i}: " + "the release train waits for the database upgrade " * 12)
    update_channel(db, general, reply_policy="every")
    calls = [call("search_messages", query=word) for word in ("deploy", "release", "train", "database")]
    fake_openai.push(Script(text="", tool_calls=calls), Script(text="", tool_calls=[call("read_messages", channel="general")]),
                     Script(text="Done."))
    budget = 2000
    responders(ai_settings(fake_openai, ai_context_tokens=budget))
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai summarise the deploy")))
    assert reply.status == "complete"
    results = [m["content"] for m in tool_messages(fake_openai.requests[-1])]
    assert sum(estimate_tokens(r) for r in results) <= budget * 0.5 + 64
    assert any(r.startswith("Error: Not run: the results so far fill the room") for r in results)


# the usage ledger ----------------------------------------------------------------
def test_every_request_of_a_reply_is_in_the_ledger_with_its_reported_usage(db, fake_openai, responders):
    from core import usage
    from fake_openai import _prompt_tokens

    ann, general = create_user(db, "Ann"), create_channel(db, "general")
    fake_openai.push(Script(text="", tool_calls=[call("search_messages", query="deploy")]), Script(text="Nothing yet."))
    responders()
    reply_id = reply_to(db, send_message(db, general, ann, "@ai anything on the deploy?"))
    reply = settled(db, reply_id)
    rows = usage.of_reply(db, reply_id)
    assert [(r["user_id"], r["estimated"], r["prompt_tokens"]) for r in rows] == [
        (ann, False, _prompt_tokens(request)) for request in fake_openai.requests]
    assert sum(r["prompt_tokens"] for r in rows) == reply.prompt_tokens


def test_a_public_channels_reply_never_sends_a_private_channels_text_to_the_model(db, fake_openai, responders):
    from core import membership

    ann, bob = create_user(db, "Ann"), create_user(db, "Bob")
    general = create_channel(db, "general")
    hiring = membership.create_private_channel(db, ann, "hiring")
    update_channel(db, hiring, reply_policy="off")
    send_message(db, hiring, ann, "The salary band for the pelican role is 90k.")  # Ann reads it; the reply's readers may not
    fake_openai.push(
        Script(text="", tool_calls=[call("search_messages", query="pelican salary"),
                                    call("search_messages", query="pelican", channel="hiring"),
                                    call("read_messages", channel="hiring")]),
        Script(text="I found nothing about that."),
    )
    responders()
    reply = settled(db, reply_to(db, send_message(db, general, ann, "@ai what is the pelican salary band?")))
    assert reply.status == "complete"
    sent = json.dumps(fake_openai.requests)
    assert "90k" not in sent and "salary band for the pelican" not in sent  # no request carries the private text
    told = [m["content"] for m in tool_messages(fake_openai.requests[1])]
    assert told[0].startswith("Found 1 message") and "#general" in told[0] and "#hiring" not in told[0]  # the question only
    assert all(t.startswith("Error:") and "hiring" in t for t in told[1:])  # as if it did not exist
    assert "90k" not in json.dumps(steps_of(reply)) and "90k" not in json.dumps(reply_context(db, reply.id))
