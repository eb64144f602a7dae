"""The AI's steps and channel AI settings in the pages (AppTest, real DuckDB file, the fake OpenAI server)."""
from __future__ import annotations

import json

from fake_openai import Script

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
    line = ":material/search: Searching all channels for \\'\\<b\\>deploy\\</b\\>\\'…"
    at = _until(at, lambda at: len(at.chat_message) == 2 and any(c.value.startswith(line) for c in at.chat_message[1].caption))
    at = _until(at, lambda at: at.chat_message[1].markdown and at.chat_message[1].markdown[0].value == "Nothing about that yet.")
    context = at.chat_message[1].expander[0]
    assert context.label == "Context used"
    assert context.caption[0].value.startswith(line)  # drawn inert: the query's HTML is text
    texts = [t.value for t in context.text]
    assert texts[0] == 'search_messages({"query": "<b>deploy</b>"})'
    assert texts[1].startswith("Found 1 message") and "anything on the <b>deploy</b>?" in texts[1]
    assert not at.exception
