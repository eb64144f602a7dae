"""Two real browser windows on one channel: what only a browser shows (Debian's Chromium via Playwright)."""
from __future__ import annotations

import re
import time

import pytest
from browser import INPUT, MESSAGE, ROOT, VIEWPORT, chromium, drawn_texts, streamlit_server, type_and_send, wait_page
from fake_openai import FakeOpenAI, Script

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser

REFRESH = 0.5  # seconds between the chat page's checks for news
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
REPLY = "Hello Ann and Bob! " + " ".join(WORDS) + "."
ARTIFACTS = ROOT / "artifacts"
# A message's own text: its rendered Markdown, not the name and time, an error box, a button or "Context used".
BODY = ".text"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The app under `streamlit run` against the local OpenAI server, with two users and four channels."""
    folder = tmp_path_factory.mktemp("browser")
    db = connect(str(folder / "chat.duckdb"))
    chat.create_user(db, "Ann")
    chat.create_user(db, "Bob")
    channels = {name: chat.create_channel(db, name, reply_policy=policy)
                for name, policy in [("sync", "every"), ("faults", "every"), ("drafts", "off"), ("html", "off")]}
    db.close()
    with FakeOpenAI(default=Script(text=REPLY, chunk_delay=0.15)) as server, \
            streamlit_server(folder / "chat.duckdb", openai_base_url=server.base_url, refresh_seconds=REFRESH,
                             log_dir=folder) as app, chromium() as browser:
        yield {"app": app, "browser": browser, "server": server, "channels": channels}


@pytest.fixture
def open_window(world):
    """Open browser windows for one test; they are closed after it (each polls the server)."""
    contexts = []

    def open_(channel: str, user: str):
        context = world["browser"].new_context(viewport=VIEWPORT)
        contexts.append(context)
        return _open(world, context.new_page(), channel, user)

    yield open_
    for context in contexts:
        context.close()


def _open(world, page, channel: str, user: str):
    """A fresh browser window (its own session) on a channel, speaking as ``user``."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    page.goto(f"{world['app'].url}/?channel={world['channels'][channel]}")
    page.wait_for_selector(INPUT, timeout=30_000)
    if user != "Ann":  # the sidebar starts on the first user by name
        page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
        page.get_by_role("option", name=user, exact=True).click()
        page.wait_for_selector(f"{INPUT}[placeholder*='as {user}']", timeout=10_000)
    return page


def _last_body(page) -> str:
    """The text of the newest chat message as drawn (the typing mark included while it streams)."""
    last = page.locator(MESSAGE).last
    return " ".join(last.locator(BODY).all_inner_texts()) if page.locator(MESSAGE).count() else ""


def _is_ai(text: str) -> bool:
    """A chat message's text starts with its avatar, then 'Name · time'."""
    return re.search(r"^AI · ", text, re.M) is not None


def _words_shown(page) -> int:
    """How many of the reply's words the newest AI message shows (it grows while the reply streams)."""
    texts = [t for t in drawn_texts(page) if _is_ai(t)]
    return sum(word in texts[-1] for word in WORDS) if texts else 0


def _shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_message_and_growing_ai_reply_reach_the_other_window(open_window):
    a, b = open_window("sync", "Ann"), open_window("sync", "Bob")
    type_and_send(b, "Hi everyone, Bob here.")
    type_and_send(a, "Hello from Ann's window")
    wait_page(b, lambda p: any("Hello from Ann's window" in t for t in drawn_texts(p)), what="A's message in B")

    seen = set()  # the reply's length as B saw it, tick by tick, without anything done in B
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (seen and max(seen) == len(WORDS) and "▌" not in drawn_texts(b)[-1]):
        seen.add(_words_shown(b))
        b.wait_for_timeout(50)
    partial = {n for n in seen if 0 < n < len(WORDS)}
    assert len(partial) >= 2, f"B saw the reply at lengths {sorted(seen)}: it should grow while streaming"
    for page in (a, b):
        wait_page(page, lambda p: _last_body(p) == REPLY, what="the complete reply")
        assert sum(_is_ai(t) for t in drawn_texts(page)) == 2  # one reply per message
    _shoot(a, "chat-ann")
    _shoot(b, "chat-bob")
    assert not a.dialogs and not b.dialogs


def test_cut_stream_shows_error_and_retry_mends_it_in_both_windows(world, open_window):
    world["server"].push(Script(text="This reply breaks off half way through", cut_after=3))
    a, b = open_window("faults", "Ann"), open_window("faults", "Bob")
    type_and_send(a, "Tell me a story")
    for page in (a, b):
        wait_page(page, lambda p: "closed the stream before the reply was finished" in " ".join(drawn_texts(p)),
              timeout=20, what="the error")
        assert "This reply breaks" in drawn_texts(page)[-1]  # the partial text is kept
    b.get_by_role("button", name="Retry").click()
    for page in (a, b):
        wait_page(page, lambda p: _last_body(p) == REPLY, timeout=30, what="the mended reply")
        assert len(drawn_texts(page)) == 2 and "closed the stream" not in " ".join(drawn_texts(page))
    _shoot(b, "retry-mended")


def test_unsent_draft_survives_refreshes(open_window):
    a, b = open_window("drafts", "Ann"), open_window("drafts", "Bob")
    b.fill(INPUT, "half-written thought, not sent")
    for i in range(3):
        type_and_send(a, f"tick {i}")
        wait_page(b, lambda p: any(f"tick {i}" in t for t in drawn_texts(p)), what=f"tick {i} in B")
    b.wait_for_timeout(int(3 * REFRESH * 1000))
    assert b.input_value(INPUT) == "half-written thought, not sent"
    assert len(drawn_texts(b)) == 3


def test_html_and_script_in_a_message_stay_inert(open_window):
    a, b = open_window("html", "Ann"), open_window("html", "Bob")
    payload = "<img src=x onerror=alert(1)><script>alert(2)</script> **bold** [link](javascript:alert(3))"
    type_and_send(a, payload)
    wait_page(b, lambda p: any("<img src=x onerror=alert(1)>" in t for t in drawn_texts(p)),
              what="the payload as text in B")
    b.wait_for_timeout(1000)
    for page in (a, b):
        assert page.locator(f"{MESSAGE} img[src=x], {MESSAGE} script").count() == 0
        assert page.locator(f"{MESSAGE} strong", has_text="bold").count() == 1  # Markdown still renders
        assert not page.dialogs
        hrefs = page.locator(f"{MESSAGE} a").evaluate_all("links => links.map(l => l.getAttribute('href') || '')")
        assert not any(re.match(r"\s*javascript:", h, re.I) for h in hrefs)


def test_deep_link_on_a_fresh_server_opens_the_app_with_its_sidebar(world, tmp_path):
    """The first visitor of a new server arrives on /users: the app's navigation and sidebar, not bare files.

    (With the pages in a folder named `pages/`, Streamlit's legacy multipage mode ran `/users` alone,
    listing every file of the folder as a page: the folder is named `views/` for that reason.)
    """
    db = connect(str(tmp_path / "chat.duckdb"))
    chat.create_user(db, "Ann")
    db.close()
    with streamlit_server(tmp_path / "chat.duckdb", log_dir=tmp_path) as app:
        page = world["browser"].new_page(viewport=VIEWPORT)
        page.goto(f"{app.url}/users")
        page.wait_for_selector("[data-testid=stSidebar] [data-testid=stSelectbox]", timeout=30_000)
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        lines = {line.strip() for line in nav.split("\n")}
        assert {"Chat", "Users", "Channels", "Tables"} <= lines and not {"app", "common", "users"} & lines
        page.get_by_role("heading", name="Users").wait_for(timeout=30_000)  # the page body comes after the sidebar
        assert page.get_by_role("heading", name="Users").count() == 1
        page.close()
