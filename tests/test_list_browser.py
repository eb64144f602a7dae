"""The message list in Chromium: readable and accessible in both themes, and every message of a busy burst drawn
once, in order, in every window of its channel.

Accessibility is checked by axe-core (the copy the axe-playwright-python wheel ships; nothing is fetched).
"""
from __future__ import annotations

import random
import re
import time
from pathlib import Path

import axe_playwright_python
import pytest
from browser import INPUT, MESSAGE, VIEWPORT, chromium, streamlit_server, wait_page
from fake_openai import FakeOpenAI, Script

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser

AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
SERIOUS = ("serious", "critical")


def _seed(path, **channels) -> dict[str, int]:
    db = connect(str(path))
    ann = chat.create_user(db, "Ann")
    ids = {name: chat.create_channel(db, name, reply_policy=policy) for name, policy in channels.items()}
    for text in ("plain words", "**bold**, _italic_, `code`, [a link](https://example.com)",
                 "```python\nprint('highlighted')\n```", "| a | b |\n|---|--:|\n| 1 | 2 |"):
        chat.send_message(db, ids["look"], ann, text)
    db.close()
    return ids


def _axe(page) -> list[dict]:
    """Serious and critical axe-core violations in the message list (its shadow root included)."""
    page.evaluate(AXE)
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       targets: v.nodes.map(n => JSON.stringify(n.target))}));
    }""")
    return [v for v in result if v["impact"] in SERIOUS and any("chat-message" in t or "messages" in t or
                                                                  ".log" in t or ".act" in t for t in v["targets"])]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_list_is_readable_and_accessible_in_both_themes(tmp_path, theme):
    ids = _seed(tmp_path / "chat.duckdb", look="every")
    with FakeOpenAI(default=Script(text="An answer with **bold** and `code`.")) as model, \
            streamlit_server(tmp_path / "chat.duckdb", openai_base_url=model.base_url, refresh_seconds=60,
                             log_dir=tmp_path) as app, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT, color_scheme=theme)  # the reader's system setting
        page.goto(f"{app.url}/?channel={ids['look']}", wait_until="commit")
        page.wait_for_selector(INPUT, timeout=30_000)
        wait_page(page, lambda p: p.locator(MESSAGE).count() == 8 and p.locator("details.context").count() == 4,
                  timeout=30, what="four messages and their finished replies")  # a settled page: no cursor blinking
        log = page.locator(".log")
        assert log.get_attribute("role") == "log" and log.get_attribute("aria-live") == "polite"
        assert page.locator(".text .nb", has_text="print").count() == 1  # highlighted on the server
        violations = _axe(page)
        assert not violations, violations
        page.keyboard.press("Tab")  # the controls are reachable by keyboard (summary, buttons)
        assert page.locator("details.context summary").count() == 4
        page.screenshot(path=str(tmp_path / f"list-{theme}.png"))
        colors = page.evaluate("""() => {
            const host = [...document.querySelectorAll('*')].find((e) => e.shadowRoot?.querySelector('.chat-message'));
            const text = host.shadowRoot.querySelector('.chat-message .text');
            return [getComputedStyle(text).color, getComputedStyle(document.body).backgroundColor];
        }""")
        ink = [int(n) for n in re.findall(r"\d+", colors[0])[:3]]
        assert (sum(ink) > 382) == (theme == "dark"), colors  # light text on the dark theme, dark on the light one


def test_a_burst_in_two_channels_reaches_every_window_once_and_in_order(tmp_path):
    """Eight windows, four on each of two channels; a message every 0.3-0.7 s in each for 40 s, AI replies on."""
    ids = _seed(tmp_path / "chat.duckdb", look="off", north="mention", south="mention")
    seconds, rng = 40.0, random.Random(7)
    with FakeOpenAI(default=Script(text="noted, thanks", chunk_delay=0.05)) as model, \
            streamlit_server(tmp_path / "chat.duckdb", openai_base_url=model.base_url, refresh_seconds=60,
                             log_dir=tmp_path) as app, chromium() as browser:
        windows = {}
        for name in ("north", "south"):
            for _ in range(4):
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.goto(f"{app.url}/?channel={ids[name]}", wait_until="commit")
                page.wait_for_selector(INPUT, timeout=60_000)
                windows.setdefault(name, []).append(page)
        sent: dict[str, list[str]] = {"north": [], "south": []}
        deadline = time.monotonic() + seconds
        turn = 0
        while time.monotonic() < deadline:
            name = ("north", "south")[turn % 2]
            text = f"{name}-{len(sent[name])}" + (" @ai" if len(sent[name]) % 5 == 0 else "")
            sender = windows[name][len(sent[name]) % 4]
            sender.fill(INPUT, text)
            sender.press(INPUT, "Enter")
            sent[name].append(text.split()[0])
            turn += 1
            sender.wait_for_timeout(rng.uniform(0.15, 0.35) * 1000)  # two channels: each gets one every 0.3-0.7 s
        for name, pages in windows.items():
            for page in pages:
                def drawn(p, name=name):
                    texts = [t for t in p.locator(MESSAGE).all_inner_texts() if f"{name}-" in t and not t.startswith("AI")]
                    return [re.search(rf"{name}-\d+", t).group() for t in texts]
                wait_page(page, lambda p, name=name, drawn=drawn: len(drawn(p)) >= len(sent[name]), timeout=60,
                          what=f"every {name} message")
                shown = drawn(page)
                assert shown == sent[name], (name, shown[:5], sent[name][:5])  # none skipped, none doubled, in order
                assert page.evaluate("window.__channelChatContent") > 0  # they came as content
    db = connect(str(tmp_path / "chat.duckdb"))
    try:
        for name, texts in sent.items():
            stored = [m.content.split()[0] for m in reversed(chat.list_messages(db, ids[name], limit=500))
                      if m.author_id is not None]
            assert stored == texts
    finally:
        db.close()
