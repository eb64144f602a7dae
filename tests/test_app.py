"""The app in Streamlit's AppTest: sidebar, chat, users and channels pages, on a real DuckDB file."""
from __future__ import annotations

import subprocess
import sys
import time

from core import chat
from message_list import act, buttons, entries, listed, text_of, texts

CHANNELS = "views/channels.py"
USERS = "views/users.py"


def _click(at, label: str):
    next(b for b in at.button if b.label == label).click()
    return at.run()


def _seed(db, policy: str = "every") -> tuple[int, int]:
    return chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy=policy)


def _messages(at) -> list[tuple[str, str]]:
    """(author, text a reader sees) of each listed message, top to bottom."""
    return [(entry["author"], text_of(entry["html"])) for entry in entries(at)]


def _until(at, done, timeout: float = 10.0):
    """Rerun the app until ``done(at)`` holds, as a browser's refresh would."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, f"gave up waiting; page shows {_messages(at)}"
        time.sleep(0.1)
        at.run()
    return at


def test_sidebar_creates_user_and_channel(app_test, app_db):
    at = app_test().run()
    assert not at.exception
    at.sidebar.text_input(key="new_user_name").input("  Ann  ")
    at = _click(at, "Create user")
    at.sidebar.text_input(key="new_channel_name").input("general")
    at = _click(at, "Create channel")

    assert not at.exception and not at.error
    assert [u.name for u in chat.list_users(app_db)] == ["Ann"]
    assert at.session_state["user_id"] == chat.list_users(app_db)[0].id
    assert at.session_state["channel_id"] == chat.list_channels(app_db)[0].id
    assert at.header[0].value == "# general"
    assert at.query_params["channel"] == str(at.session_state["channel_id"])


def test_sidebar_shows_readable_error_for_bad_names(app_test, app_db):
    chat.create_user(app_db, "Ann")
    at = app_test().run()
    at.sidebar.text_input(key="new_user_name").input("   ")
    at = _click(at, "Create user")
    assert "cannot be empty" in at.sidebar.error[0].value
    at.sidebar.text_input(key="new_user_name").input("ANN")
    at = _click(at, "Create user")
    assert "already exists" in at.sidebar.error[0].value
    assert not at.exception
    assert len(chat.list_users(app_db)) == 1


def test_chat_without_key_says_ai_is_off(app_test, app_db):
    user_id, channel_id = _seed(app_db)
    at = app_test(user_id=user_id, channel_id=channel_id).run()
    assert "AI replies are off" in at.sidebar.caption[-1].value

    text = "hello **world** <b>bold?</b> ' OR 1=1; --"
    at.chat_input[0].set_value(text).run()
    assert not at.exception
    mine = entries(at)[0]  # the AI's reply follows it
    assert mine["author"] == "Ann" and chat.list_messages(app_db, channel_id)[-1].content == text  # stored exactly
    assert mine["html"] == "<p>hello <strong>world</strong> &lt;b&gt;bold?&lt;/b&gt; ' OR 1=1; --</p>"  # HTML inert

    at = _until(at, lambda at: any(entry["error"] for entry in entries(at)))
    reply = entries(at)[1]
    assert "no OPENAI_API_KEY is set" in reply["error"]
    assert buttons(at, reply) == ["Retry"]


def test_chat_streams_ai_reply_from_server(app_test, app_db, fake_openai):
    from fake_openai import Script

    fake_openai.push(Script(text="Hi Ann, **welcome**!"))
    user_id, channel_id = _seed(app_db)
    at = app_test(user_id=user_id, channel_id=channel_id)
    at.secrets["OPENAI_API_KEY"] = "test-key"
    at.secrets["OPENAI_BASE_URL"] = fake_openai.base_url
    at.run()
    assert "AI replies on" in at.sidebar.caption[-1].value

    at.chat_input[0].set_value("Hello AI").run()
    at = _until(at, lambda at: len(entries(at)) == 2 and entries(at)[1]["status"] == "complete")
    reply = entries(at)[1]
    assert reply["author"] == "AI" and reply["html"] == "<p>Hi Ann, <strong>welcome</strong>!</p>"
    assert reply["has_context"]  # "Context used" is offered, and loaded when opened
    at = act(at, "context", reply["id"])
    opened = listed(at)["contexts"][str(reply["id"])]
    assert '"Ann: Hello AI"' in opened["request"]
    sent = fake_openai.requests[-1]["messages"]
    assert sent[-1] == {"role": "user", "content": "Ann: Hello AI"}


def test_chat_rejects_empty_and_oversized_messages(app_test, app_db):
    user_id, channel_id = _seed(app_db, policy="off")
    at = app_test(user_id=user_id, channel_id=channel_id).run()
    at.chat_input[0].set_value("   \n ").run()
    assert at.error[0].value == "Your message was not sent. The message is empty."
    at.chat_input[0].set_value("x" * (chat.CONTENT_MAX_BYTES + 1)).run()
    assert "not sent" in at.error[0].value and "too long" in at.error[0].value and "1 MB" in at.error[0].value
    box = at.chat_input[0].proto
    assert box.set_value and box.value == "x" * (chat.CONTENT_MAX_BYTES + 1)  # back in the box, nothing lost
    at.run()
    assert not at.error  # the notice is shown once
    assert not at.exception
    assert chat.list_messages(app_db, channel_id) == []


def test_one_enter_submitted_twice_by_a_slow_browser_is_stored_once(app_test, app_db):
    user_id, channel_id = _seed(app_db, policy="off")
    at = app_test(user_id=user_id, channel_id=channel_id).run()
    at.chat_input[0].set_value("ship it").run()
    at.chat_input[0].set_value("ship it").run()  # the same submit again, at once: stored once
    at.chat_input[0].set_value("and the docs").run()
    at.chat_input[0].set_value("ship it").run()  # another message came between: a second message
    time.sleep(1.1)  # views/chat.py's REPEAT_SECONDS (importing the page would run it)
    at.chat_input[0].set_value("ship it").run()  # after the window: a person sending it again
    stored = [m.content for m in reversed(chat.list_messages(app_db, channel_id))]
    assert stored == ["ship it", "and the docs", "ship it", "ship it"]
    assert not at.exception and not at.error


def test_load_older_pages_back(app_test, app_db):
    user_id, channel_id = _seed(app_db, policy="off")
    for i in range(25):
        chat.send_message(app_db, channel_id, user_id, f"message {i}")
    at = app_test(user_id=user_id, channel_id=channel_id).run()
    assert texts(at) == [f"message {i}" for i in range(15, 25)] and listed(at)["more"]
    at = act(at, "older")
    assert texts(at) == [f"message {i}" for i in range(5, 25)]
    at = act(at, "older", n=2)
    assert len(entries(at)) == 25
    assert not listed(at)["more"]  # nothing older: no "Load older"


def test_link_opens_channel(app_test, app_db):
    user_id, _ = _seed(app_db)
    other = chat.create_channel(app_db, "random")
    at = app_test()
    at.query_params["channel"] = str(other)
    at.run()
    assert at.session_state["channel_id"] == other
    assert at.header[0].value == "# random"


def test_retry_button_reruns_failed_reply(app_test, app_db, fake_openai):
    from fake_openai import Script

    user_id, channel_id = _seed(app_db)
    fake_openai.push(Script(text="partial answer that breaks", cut_after=2), Script(text="A full answer."))
    at = app_test(user_id=user_id, channel_id=channel_id)
    at.secrets["OPENAI_API_KEY"] = "test-key"
    at.secrets["OPENAI_BASE_URL"] = fake_openai.base_url
    at.run()
    at.chat_input[0].set_value("Tell me something").run()
    at = _until(at, lambda at: len(entries(at)) == 2 and entries(at)[1]["error"])
    reply = chat.list_messages(app_db, channel_id)[0]
    assert reply.content == "partial answer "  # the partial text is kept, and shown
    assert texts(at)[1] == reply.content.strip() and buttons(at, entries(at)[1]) == ["Retry"]
    at = act(at, "retry", reply.id)
    at = _until(at, lambda at: texts(at)[1] == "A full answer.")
    assert len(entries(at)) == 2  # retried in place: still one reply


def test_users_page_creates_and_counts(app_test, app_db):
    user_id, channel_id = _seed(app_db, policy="off")
    chat.send_message(app_db, channel_id, user_id, "one")
    chat.send_message(app_db, channel_id, user_id, "two")
    at = app_test(page=USERS).run()
    at.text_input[0].input("Bob")
    at = _click(at, "Create user")
    assert "Created user Bob" in at.success[0].value
    table = at.dataframe[0].value
    assert dict(zip(table["name"], table["messages"])) == {"Ann": 2, "Bob": 0}
    at.text_input[0].input("x" * 81)
    at = _click(at, "Create user")
    assert "too long" in at.error[0].value and not at.exception


def test_channels_page_creates_and_edits_persona(app_test, app_db):
    at = app_test(page=CHANNELS).run()
    at.text_input[0].input("help desk")
    at.radio[0].set_value("mention")
    at = _click(at, "Create channel")
    assert "Created channel #help desk" in at.success[0].value
    channel = chat.list_channels(app_db)[0]
    assert channel.reply_policy == "mention"

    at.radio[1].set_value("off")
    at.text_area[0].input("You are a pirate.")
    at = _click(at, "Save")
    assert "Saved" in at.success[0].value
    channel = chat.get_channel(app_db, channel.id)
    assert (channel.reply_policy, channel.persona) == ("off", "You are a pirate.")
    assert at.dataframe[0].value["reply_policy"].tolist() == ["off"]


def test_markdown_in_a_name_is_stored_exactly_and_drawn_literally(app_test, app_db):
    at = app_test(page=CHANNELS).run()
    at.text_input[0].input("**not bold** <i>x</i>")
    at = _click(at, "Create channel")
    assert chat.list_channels(app_db)[0].name == "**not bold** <i>x</i>"
    assert at.success[0].value == "Created channel #\\*\\*not bold\\*\\* \\<i\\>x\\</i\\>."  # escaped: shown as typed
    at = app_test(channel_id=chat.list_channels(app_db)[0].id).run()
    assert at.header[0].value == "# \\*\\*not bold\\*\\* \\<i\\>x\\</i\\>"


def test_locked_database_shows_clear_page(app_test, isolated_settings):
    import os

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()",
         os.environ["CHAT_DB"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        at = app_test().run()
        assert not at.exception
        assert "Another Channel Chat instance holds the database" in at.error[0].value
    finally:
        holder.communicate("", timeout=10)
