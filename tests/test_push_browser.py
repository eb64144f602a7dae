"""Push in real browser windows (Debian's Chromium): changes arrive long before the fallback could fire.

The server runs with the slowest fallback (REFRESH_SECONDS=60), so anything a window shows sooner
than a minute after it last drew was pushed.
"""
from __future__ import annotations

import time

import pytest
from browser import VIEWPORT, chromium, free_port, streamlit_server
from fake_openai import FakeOpenAI, Script

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser

FALLBACK = 60.0  # seconds: REFRESH_SECONDS, the slow poll push makes unnecessary (its maximum)
INPUT = "[data-testid=stChatInput] textarea"
MESSAGE = "article.chat-message:not(.echo)"  # a stored message in the list (views/messages.js), not a line still sending
WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


def _seed(path, **channels) -> dict[str, int]:
    db = connect(str(path))
    for name in ("Ann", "Bob"):
        chat.create_user(db, name)
    ids = {name: chat.create_channel(db, name, reply_policy=policy) for name, policy in channels.items()}
    db.close()
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("push")
    channels = _seed(folder / "chat.duckdb", talk="off", ai="every", many="off", drafts="off", echo="off",
                     stop="every")
    with FakeOpenAI(default=Script(text=" ".join(WORDS), chunk_delay=0.2)) as model, \
            streamlit_server(folder / "chat.duckdb", openai_base_url=model.base_url, refresh_seconds=FALLBACK,
                             log_dir=folder) as app, chromium() as browser:
        yield {"app": app, "browser": browser, "channels": channels}


@pytest.fixture
def contexts(world):
    opened = []

    def new():
        opened.append(world["browser"].new_context(viewport=VIEWPORT))
        return opened[-1]

    yield new
    for context in opened:
        context.close()


def _open(context, url: str):
    page = context.new_page()
    page.goto(url, wait_until="commit")  # never wait for `load`: a page that streams may never "finish"
    page.wait_for_selector(INPUT, timeout=30_000)
    page.loaded_at = time.monotonic()
    return page


def _send(page, text: str) -> None:
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def _sockets(page) -> int:
    """How many /live WebSockets the page's listener opened (reconnects included)."""
    return page.evaluate("window.__channelChatSockets || 0")


def _why(page) -> str:
    """What the listener went through, for a failure message."""
    return page.evaluate("JSON.stringify({mounts: window.__channelChatMounts, reruns: window.__channelChatReruns})")


def _shows(page, text: str, timeout: float) -> float:
    """Wait until ``text`` is in a chat message; return when (time.monotonic())."""
    page.locator(MESSAGE, has_text=text).first.wait_for(timeout=timeout * 1000)
    return time.monotonic()


def test_a_message_and_a_growing_reply_are_pushed_to_the_other_window(world, contexts):
    url = f"{world['app'].url}/?channel={world['channels']['ai']}"
    a, b = _open(contexts(), url), _open(contexts(), url)
    sent = time.monotonic()
    _send(a, "hello from A")
    seen = _shows(b, "hello from A", timeout=10)
    assert seen - b.loaded_at < FALLBACK and seen - sent < 5  # pushed: the fallback cannot have fired yet
    runs = b.evaluate("window.__channelChatListRuns")  # script runs that handed B's list data

    lengths = set()  # how much of the AI reply B showed, checked without touching B
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(lengths) < 3:
        texts = b.locator(MESSAGE).all_inner_texts()
        lengths.add(sum(word in texts[-1] for word in WORDS) if len(texts) == 2 else 0)
        lengths.discard(0)
        lengths.discard(len(WORDS))
        b.wait_for_timeout(50)
    assert len(lengths) >= 2, f"B saw the reply at lengths {sorted(lengths)}: it should grow as it streams"
    _shows(b, " ".join(WORDS), timeout=20)
    assert time.monotonic() - b.loaded_at < FALLBACK
    assert b.evaluate("window.__channelChatListRuns") == runs  # the reply grew in B as content: no script ran for it
    assert b.evaluate("window.__channelChatContent") >= 3
    assert _sockets(a) == _sockets(b) == 1, (_why(a), _why(b))  # one connection per page, kept across reruns


def test_eight_windows_in_one_browser_all_load_and_stay_live(world, contexts):
    context = contexts()  # one browser profile: its tabs share the per-host connection limits
    url = f"{world['app'].url}/?channel={world['channels']['many']}"
    pages = [_open(context, url) for _ in range(8)]
    sent = time.monotonic()
    _send(pages[0], "to all eight")
    for page in pages:
        assert _shows(page, "to all eight", timeout=15) - sent < 10
    assert [_sockets(page) for page in pages] == [1] * 8


def test_typing_survives_pushed_messages_and_a_new_channel(world, contexts):
    url = f"{world['app'].url}/?channel={world['channels']['drafts']}"
    a, b = _open(contexts(), url), _open(contexts(), url)
    b.fill(INPUT, "half-written thought")
    for i in range(3):
        _send(a, f"tick {i}")
        _shows(b, f"tick {i}", timeout=10)
    a.locator("[data-testid=stSidebar] button", has_text="New channel").click()
    a.get_by_label("Channel name").fill("fresh")
    a.get_by_role("button", name="Create channel").click()
    b.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").nth(1).click()  # B's sidebar followed
    b.get_by_role("option", name="# fresh").wait_for(timeout=10_000)
    b.keyboard.press("Escape")
    assert time.monotonic() - b.loaded_at < FALLBACK
    assert b.input_value(INPUT) == "half-written thought"


def test_pages_reconnect_after_a_server_restart_and_catch_up(tmp_path, contexts):
    channels = _seed(tmp_path / "chat.duckdb", restart="off")
    url_path, port = f"/?channel={channels['restart']}", free_port()
    with streamlit_server(tmp_path / "chat.duckdb", refresh_seconds=FALLBACK, log_dir=tmp_path, port=port) as app:
        a, b = _open(contexts(), app.url + url_path), _open(contexts(), app.url + url_path)
        _send(a, "before the restart")
        _shows(b, "before the restart", timeout=10)
    db = connect(str(tmp_path / "chat.duckdb"))  # the server is down: write as another process would
    chat.send_message(db, channels["restart"], 1, "while the server was down")
    db.close()
    with streamlit_server(tmp_path / "chat.duckdb", refresh_seconds=FALLBACK, log_dir=tmp_path, port=port):
        for page in (a, b):  # nobody reloads: the pages come back by themselves
            _shows(page, "while the server was down", timeout=30)
        b.wait_for_function("window.__channelChatSockets >= 2", timeout=10_000)  # the listener reconnected
        sent = time.monotonic()
        _send(a, "after the restart")
        assert _shows(b, "after the restart", timeout=10) - sent < 5


def test_a_message_sent_through_one_replica_is_pushed_to_a_window_on_another(pg_url, tmp_path, contexts):
    db = connect(pg_url)
    chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "replicas", reply_policy="off")
    db.close()
    with streamlit_server(pg_url, refresh_seconds=FALLBACK, log_dir=tmp_path) as one, \
            streamlit_server(pg_url, refresh_seconds=FALLBACK, log_dir=tmp_path) as two:
        a = _open(contexts(), f"{one.url}/?channel={channel}")
        b = _open(contexts(), f"{two.url}/?channel={channel}")
        sent = time.monotonic()
        _send(a, "committed on replica one")
        assert _shows(b, "committed on replica one", timeout=10) - sent < 5  # Postgres NOTIFY, then push


def test_beyond_the_socket_cap_a_page_backs_off_and_its_fallback_keeps_it_current(tmp_path, contexts):
    channels = _seed(tmp_path / "chat.duckdb", capped="off")
    url = f"/?channel={channels['capped']}"
    with streamlit_server(tmp_path / "chat.duckdb", refresh_seconds=2, log_dir=tmp_path,
                          extra_env={"LIVE_SOCKETS_PER_CLIENT": "1"}) as app:
        a = _open(contexts(), app.url + url)
        a.wait_for_function("window.__channelChatPushes >= 1", timeout=10_000)  # A holds this address's one socket
        b = _open(contexts(), app.url + url)
        b.wait_for_function("window.__channelChatClosed === 4429", timeout=10_000)  # views/route.py's TOO_MANY
        _send(a, "seen by the fallback")
        _shows(b, "seen by the fallback", timeout=15)  # the page still follows, by its fallback check
        b.wait_for_timeout(5_000)
        assert _sockets(b) == 1, _why(b)  # no retry within seconds: the listener waits 30 s or more
        assert not b.evaluate("window.__channelChatPushes || 0")


# Records, once per frame, when a line is first drawn as "sending" and when as stored (inside the list's shadow root).
RECORD = """(text) => {
  const seen = (window.__seen = { echo: null, stored: null, frames: 0 });
  const roots = () => [...document.querySelectorAll("*")].filter((e) => e.shadowRoot).map((e) => e.shadowRoot);
  const look = () => {
    seen.frames++;
    for (const root of roots()) {
      for (const node of root.querySelectorAll("article.chat-message")) {
        if (!node.textContent.includes(text)) continue;
        const kind = node.classList.contains("echo") ? "echo" : "stored";
        if (seen[kind] === null) seen[kind] = performance.now();
      }
    }
    if (seen.stored === null) requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}"""


def test_the_senders_line_is_drawn_at_enter_and_confirmed_once_in_place(world, contexts):
    url = f"{world['app'].url}/?channel={world['channels']['echo']}"
    a = _open(contexts(), url)
    a.evaluate(RECORD, "my own line")
    _send(a, "my own line")
    _shows(a, "my own line", timeout=10)
    a.wait_for_function("window.__seen.stored !== null", timeout=10_000)
    seen = a.evaluate("window.__seen")
    assert seen["echo"] is not None and seen["echo"] < seen["stored"], seen  # drawn before the store came back
    a.wait_for_timeout(500)
    assert a.locator("article.chat-message", has_text="my own line").count() == 1  # confirmed in place: not doubled

    _send(a, "first of two")
    a.wait_for_timeout(150)
    _send(a, "second of two")
    _shows(a, "second of two", timeout=10)
    a.wait_for_timeout(500)
    texts = a.locator(MESSAGE).all_inner_texts()
    assert [i for i, t in enumerate(texts) if "of two" in t] == [1, 2] and "first" in texts[1]  # both, in order
    assert a.locator("article.echo").count() == 0


def test_a_refused_line_is_kept_and_marked_with_why(world, contexts):
    url = f"{world['app'].url}/?channel={world['channels']['echo']}"
    a = _open(contexts(), url)
    _send(a, "\u200b\u200b")  # the box takes it, the app refuses it
    marked = a.locator("article.echo.refused")
    marked.wait_for(timeout=15_000)
    assert "Not sent." in marked.inner_text() and "no visible characters" in marked.inner_text()
    assert a.input_value(INPUT) == "\u200b\u200b"  # back in the box: nothing lost


def test_stop_and_retry_from_the_list(world, contexts):
    url = f"{world['app'].url}/?channel={world['channels']['stop']}"
    a = _open(contexts(), url)
    _send(a, "say a long thing")
    a.get_by_role("button", name="Stop").click(timeout=15_000)
    a.locator(MESSAGE, has_text="Stopped.").wait_for(timeout=10_000)
    a.get_by_role("button", name="Retry").click(timeout=10_000)
    _shows(a, " ".join(WORDS), timeout=30)
    assert a.locator(MESSAGE).count() == 2  # retried in place
