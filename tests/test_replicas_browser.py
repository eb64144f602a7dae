"""Two `streamlit run` replicas on one Postgres database, a Chromium window on each (Debian's Chromium)."""
from __future__ import annotations

import re
import time

import pytest
from browser import VIEWPORT, chromium, streamlit_server
from fake_openai import FakeOpenAI, Script

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser

MESSAGE = "article.chat-message:not(.echo)"  # a stored message in the list (views/messages.js), not a line still sending
INPUT = "[data-testid=stChatInput] textarea"
REPLY = "One reply, written once, seen by both replicas."


def _open(browser, app, channel_id: int, user: str):
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(f"{app.url}/?channel={channel_id}")
    page.wait_for_selector(INPUT, timeout=30_000)
    if user != "Ann":  # the sidebar starts on the first user by name
        page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
        page.get_by_role("option", name=user, exact=True).click()
        page.wait_for_selector(f"{INPUT}[placeholder*='as {user}']", timeout=10_000)
    return page


def _texts(page) -> list[str]:
    return page.locator(MESSAGE).all_inner_texts()


def _wait(page, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition(_texts(page)):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; the page shows {_texts(page)}")
        page.wait_for_timeout(50)


def _ai_replies(texts: list[str]) -> list[str]:
    return [t for t in texts if re.search(r"^AI · ", t, re.M)]


def test_a_message_on_one_replica_shows_on_the_other_and_is_answered_once(pg_server, tmp_path):
    url = pg_server.create_database()
    db = connect(url)
    chat.create_user(db, "Ann")
    chat.create_user(db, "Bob")
    channel = chat.create_channel(db, "replicas")
    with FakeOpenAI(default=Script(text=REPLY, chunk_delay=0.05)) as fake, \
            streamlit_server(url, openai_base_url=fake.base_url, refresh_seconds=0.5, log_dir=tmp_path) as one, \
            streamlit_server(url, openai_base_url=fake.base_url, refresh_seconds=0.5, log_dir=tmp_path) as two, \
            chromium() as browser:
        a, b = _open(browser, one, channel, "Ann"), _open(browser, two, channel, "Bob")
        a.fill(INPUT, "Hello from replica one")
        a.press(INPUT, "Enter")
        _wait(b, lambda texts: any("Hello from replica one" in t for t in texts), 15, "A's message on replica two")
        for page in (a, b):
            _wait(page, lambda texts: any(REPLY in t for t in _ai_replies(texts)), 30, "the AI reply")
        time.sleep(1.5)  # a second reply, if one were generated, would show by now
        for page in (a, b):
            assert len(_ai_replies(_texts(page))) == 1
        assert len(fake.requests) == 1, "the reply was generated once across both replicas"
        assert db.one("SELECT count(*) FROM messages WHERE author_id IS NULL") == (1,)
    db.close()
