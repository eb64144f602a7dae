"""The app under AppTest on Postgres: the chat works the same, and a server that is down is a sentence, not a traceback."""
from __future__ import annotations

from core import chat


def test_chat_on_postgres_stores_and_shows_messages(app_test, pg_url, monkeypatch):
    monkeypatch.setenv("CHAT_DB", pg_url)
    at = app_test().run()
    assert not at.exception
    at.sidebar.text_input(key="new_user_name").input("Ann")
    next(b for b in at.button if b.label == "Create user").click()
    at = at.run()
    at.sidebar.text_input(key="new_channel_name").input("general")
    next(b for b in at.button if b.label == "Create channel").click()
    at = at.run()
    at.chat_input[0].set_value("hello from AppTest on Postgres").run()
    # The send is stored before the page runs, so the AI reply (no key here) may already say it is off.
    assert not at.exception and all(e.value.startswith("AI replies are off") for e in at.error)
    from core.store import connect

    db = connect(pg_url)
    try:
        (general,) = [c.id for c in chat.list_channels(db)]
        assert [m.content for m in chat.list_messages(db, general) if not m.is_ai] == ["hello from AppTest on Postgres"]
    finally:
        db.close()


def test_an_unreachable_postgres_is_named_without_its_password(app_test, pg_server, monkeypatch):
    url = f"postgresql://chat:top-secret-pw@127.0.0.1:{pg_server.port + 1}/chatdb"  # nothing listens there
    monkeypatch.setenv("CHAT_DB", url)
    at = app_test().run()
    assert not at.exception
    text = " ".join(e.value for e in at.error)
    assert "chat@127.0.0.1" in text and "/chatdb" in text and "unreachable" in text
    assert "top-secret-pw" not in str(at)  # nowhere in the page's elements
