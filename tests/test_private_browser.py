"""Private channels and direct messages in Debian's Chromium, with people signed in through the real OIDC provider
(tests/test_login_browser.py's): Ann makes a private channel and a direct message with Boss; Bob never reaches
either by URL; Boss reads the direct message, live."""
from __future__ import annotations

import re

import pytest
from browser import INPUT, ROOT, drawn_texts, type_and_send, wait_page

from test_login_browser import person, world  # noqa: F401 (the fixtures: the app, the provider, Chromium)

pytestmark = pytest.mark.browser
SIDEBAR = "[data-testid=stSidebar]"
ARTIFACTS = ROOT / "artifacts"


def _linked_channel(page) -> int:
    """The channel the page shows, from the ?channel=N the sidebar keeps in its URL."""
    wait_page(page, lambda p: re.search(r"[?&]channel=(\d+)", p.url), what="the channel in the URL")
    return int(re.search(r"[?&]channel=(\d+)", page.url)[1])


def test_a_private_channel_and_a_direct_message_reach_their_members_only(world, person):  # noqa: F811
    boss, bob, ann = person("boss"), person("bob"), person("ann")  # each has a user before Ann picks people
    sidebar = ann.locator(SIDEBAR)

    sidebar.get_by_role("button", name="New channel").click()
    ann.get_by_label("Channel name").fill("plans")
    ann.get_by_text("Private: members only").click()
    ann.get_by_role("button", name="Create channel").click()
    ann.wait_for_selector(f"{INPUT}[placeholder*='🔒 plans as Ann']", timeout=30_000)
    type_and_send(ann, "the plans are secret")
    wait_page(ann, lambda p: any("the plans are secret" in t for t in drawn_texts(p)), what="Ann's private message")
    plans = _linked_channel(ann)

    sidebar.get_by_role("button", name="New direct message").click()
    picker = ann.get_by_role("combobox").filter(has_text="Pick 1 to 7 people").or_(
        ann.locator("[data-testid=stMultiSelect] input"))
    picker.first.click()
    ann.get_by_role("option", name="Boss").click()
    ann.keyboard.press("Escape")
    ann.get_by_role("button", name="Open direct message").click()
    ann.wait_for_selector(f"{INPUT}[placeholder*='@ Boss as Ann']", timeout=30_000)
    direct = _linked_channel(ann)
    assert direct != plans

    boss.goto(f"{world['app'].url}/?channel={direct}")
    boss.wait_for_selector(f"{INPUT}[placeholder*='@ Ann as Boss']", timeout=30_000)
    type_and_send(ann, "just for you, Boss")
    wait_page(boss, lambda p: any("just for you, Boss" in t for t in drawn_texts(p)), timeout=20,
              what="Ann's direct message in Boss's window, live")

    for channel in (plans, direct):  # Bob, by URL: a sentence, never the channel
        bob.goto(f"{world['app'].url}/?channel={channel}")
        bob.wait_for_selector("text=which you cannot open", timeout=30_000)
        bob.wait_for_timeout(500)
        assert not [t for t in drawn_texts(bob) if "secret" in t or "just for you" in t]
        assert "🔒" not in bob.get_attribute(INPUT, "placeholder") and "@" not in bob.get_attribute(INPUT, "placeholder")

    ann.locator(SIDEBAR).locator("[data-testid=stSelectbox]").last.click()  # the channel list, grouped by kind
    options = ann.get_by_role("option")
    wait_page(ann, lambda p: options.count() >= 3, what="the channel list open")
    assert [t.strip() for t in options.all_inner_texts()][-2:] == ["🔒 plans", "@ Boss"]
    ARTIFACTS.mkdir(exist_ok=True)
    ann.screenshot(path=str(ARTIFACTS / "private.png"))  # the README's docs/private.png
    ann.keyboard.press("Escape")
