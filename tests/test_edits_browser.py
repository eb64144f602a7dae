"""Edits, deletes and reactions in Chromium, two windows on one channel: an edit shows "(edited)" in both, a delete
leaves a tombstone in both, a reaction's count changes in both; the controls work from the keyboard."""
from __future__ import annotations

import pytest
from browser import INPUT, MESSAGE, VIEWPORT, chromium, streamlit_server, wait_page
from test_list_browser import _axe

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser


def _seed(path) -> tuple[int, list[int]]:
    db = connect(str(path))
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "quiet", reply_policy="off")
    ids = [chat.send_message(db, channel, ann, text) for text in ("helo wrld", "a line to take back")]
    db.close()
    return channel, ids


def _message(page, message_id: int):
    return page.locator(f'{MESSAGE}[data-message-id="{message_id}"]')


def test_two_windows_see_edits_deletes_and_reactions(tmp_path):
    channel, (first, second) = _seed(tmp_path / "chat.duckdb")
    with streamlit_server(tmp_path / "chat.duckdb", refresh_seconds=60, log_dir=tmp_path) as app, \
            chromium() as browser:
        windows = []
        for _ in range(2):
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(f"{app.url}/?channel={channel}", wait_until="commit")
            page.wait_for_selector(INPUT, timeout=60_000)
            wait_page(page, lambda p: p.locator(MESSAGE).count() == 2, timeout=30, what="both messages")
            windows.append(page)
        a, b = windows

        # Edit from the keyboard: Enter on Edit opens the box, Escape cancels, Enter saves.
        _message(a, first).locator(".act.edit").focus()
        a.keyboard.press("Enter")
        box = _message(a, first).locator(".edit-box")
        box.wait_for(timeout=5_000)
        assert box.input_value() == "helo wrld" and box.evaluate("(e) => e.matches(':focus')")
        a.keyboard.press("Escape")
        wait_page(a, lambda p: _message(p, first).locator(".edit-box").count() == 0, what="the box closed")
        _message(a, first).locator(".act.edit").click()
        box = _message(a, first).locator(".edit-box")
        box.fill("")
        box.press_sequentially("hello world, c r")  # typed keys, as a person types: no page shortcut fires
        a.keyboard.press("Shift+Enter")
        box.press_sequentially("second line")
        assert box.input_value() == "hello world, c r\nsecond line"
        box.press("Enter")
        for page in windows:
            wait_page(page, lambda p: "second line" in _message(p, first).inner_text()
                      and _message(p, first).locator(".edited").count() == 1, timeout=15, what="the edit, marked")
            assert "(edited)" in _message(page, first).inner_text()

        # A reaction from B's picker, then A's click on the chip: the count moves in both windows.
        _message(b, first).locator(".add-reaction").click()
        _message(b, first).get_by_role("button", name="React with 👍").click()
        for page in windows:
            wait_page(page, lambda p: _message(p, first).locator(".chip").all_inner_texts() == ["👍 1"], timeout=15,
                      what="one 👍")
        assert _message(b, first).locator(".chip").get_attribute("aria-pressed") == "true"  # both windows speak as Ann
        _message(a, first).locator(".add-reaction").click()
        any_emoji = _message(a, first).locator(".any-emoji")
        any_emoji.fill("🎉")
        any_emoji.press("Enter")
        for page in windows:
            wait_page(page, lambda p: _message(p, first).locator(".chip").all_inner_texts() == ["👍 1", "🎉 1"],
                      timeout=15, what="👍 and 🎉")
        _message(a, first).locator(".chip", has_text="👍").click()  # Ann takes hers back
        for page in windows:
            wait_page(page, lambda p: _message(p, first).locator(".chip").all_inner_texts() == ["🎉 1"], timeout=15,
                      what="👍 gone")
        violations = _axe(a)
        assert not violations, violations

        # Delete with its confirm step: a tombstone in both windows, the text gone.
        _message(a, second).locator(".act.delete").click()
        _message(a, second).locator(".confirm-delete").click()
        for page in windows:
            wait_page(page, lambda p: _message(p, second).locator(".tombstone").count() == 1, timeout=15,
                      what="the tombstone")
            assert "take back" not in _message(page, second).inner_text()
            assert "Ann" in _message(page, second).inner_text()  # author and time stay
    db = connect(str(tmp_path / "chat.duckdb"))
    try:
        assert chat.get_message(db, first).content == "hello world, c r\nsecond line"
        assert chat.get_message(db, second).content == "" and chat.get_message(db, second).deleted_at is not None
    finally:
        db.close()
