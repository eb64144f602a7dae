"""The AI's steps and channel AI settings in the pages (AppTest, real DuckDB file, the fake OpenAI server)."""
from __future__ import annotations

import json

from fake_openai import Script
from message_list import act, entries, listed, text_of

from core import chat
from test_app import CHANNELS, _click, _seed, _until


def test_channels_page_sets_model_and_look_back(app_test, app_db):
    _seed(app_db)
    at = app_test(page=CHANNELS).run()
    model = next(t for t in at.text_input if t.label == "Model")
    assert model.placeholder == "gpt-4o"
    model.input("llama3.1")
    next(t for t in at.toggle if t.label == "Look further back").set_value(True)
    at = _click(at, "Save")
    assert "Saved" in at.success[0].value and not at.exception
    channel = chat.list_channels(app_db)[0]
    assert (channel.model, channel.look_back) == ("llama3.1", True)

    next(t for t in at.text_input if t.label == "Model").input("two words")
    at = _click(at, "Save")
    assert at.error[0].value == "A model name has no spaces or control characters (e.g. gpt-4o-mini)."
    assert chat.list_channels(app_db)[0].model == "llama3.1"


def test_chat_shows_the_step_while_it_runs_and_the_call_in_context_used(app_test, app_db, fake_openai):
    user_id, channel_id = _seed(app_db)
    fake_openai.push(
        Script(text="", tool_calls=[{"name": "search_messages", "arguments": json.dumps({"query": "<b>deploy</b>"})}]),
        Script(text="Nothing about that yet.", delay=1.5),
    )
    at = app_test(user_id=user_id, channel_id=channel_id)
    at.secrets["OPENAI_API_KEY"] = "test-key"
    at.secrets["OPENAI_BASE_URL"] = fake_openai.base_url
    at.run()
    at.chat_input[0].set_value("@ai anything on the <b>deploy</b>?").run()
    label = "Searching all channels for '<b>deploy</b>'…"  # the list sets step lines as text: the query's HTML is inert
    at = _until(at, lambda at: len(entries(at)) == 2 and any(step["label"] == label for step in entries(at)[1]["steps"]))
    at = _until(at, lambda at: entries(at)[1]["status"] == "complete")
    reply = entries(at)[1]
    assert text_of(reply["html"]) == "Nothing about that yet." and reply["has_context"]
    at = act(at, "context", reply["id"])  # "Context used", opened: each step with what it returned
    [step] = listed(at)["contexts"][str(reply["id"])]["steps"]
    assert step["label"] == label and (step["tool"], step["arguments"]) == ("search_messages", '{"query": "<b>deploy</b>"}')
    assert step["output"].startswith("Found 1 message") and "anything on the <b>deploy</b>?" in step["output"]
    assert not at.exception
