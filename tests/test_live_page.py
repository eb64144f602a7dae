"""The pages' live listener under AppTest: one per page, carrying the stamps the page drew.

(AppTest draws the listener as an element it does not know and cannot fire its trigger: the
trigger path itself is covered by tests/test_push_browser.py.)
"""
from __future__ import annotations

import json

from core import chat
from core.feed import feed_of
from core.recent import DIRECTORY


def listeners(at) -> list[tuple[str, dict]]:
    """(key, data) of each live listener the run drew, in the main area and the sidebar."""
    found = [node.proto for node in at.get("bidi_component") if node.proto.component_name == "channel_chat.live"]
    return [(proto.id.split("-", 2)[2], json.loads(proto.bytes)) for proto in found]  # id: $$ID-<hash>-<key>


def test_chat_page_mounts_one_listener_for_its_channel_and_the_directory(app_test, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = app_test(user_id=ann, channel_id=channel).run()
    feed = feed_of(app_db)
    [(key, data)] = listeners(at)
    assert key == f"live-{channel}"
    assert data == {"path": f"/live?topics={DIRECTORY},{channel}",
                    "shown": {str(DIRECTORY): feed.current(DIRECTORY), str(channel): feed.current(channel)}}

    chat.send_message(app_db, channel, ann, "news")
    at.run()
    [(_, data)] = listeners(at)
    assert data["shown"][str(channel)] == feed.current(channel)  # the stamp of what the page now shows
    assert any("news" in md.value for m in at.chat_message for md in m.markdown)


def test_other_pages_follow_the_directory_from_the_sidebar(app_test, app_db):
    chat.create_user(app_db, "Ann")
    at = app_test(page="views/users.py").run()
    assert not at.exception
    [(key, data)] = listeners(at)
    assert key == "live-directory" and data["path"] == f"/live?topics={DIRECTORY}"
    assert data["shown"] == {str(DIRECTORY): feed_of(app_db).current(DIRECTORY)}


def test_chat_page_without_channels_still_follows_the_directory(app_test, app_db):
    at = app_test().run()
    assert "Create a channel" in at.info[0].value
    assert [key for key, _ in listeners(at)] == ["live-directory"]


def test_push_can_be_turned_off(app_test, app_db, monkeypatch):
    monkeypatch.setenv("LIVE_PUSH", "off")
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = app_test(user_id=ann, channel_id=channel).run()
    assert not at.exception and listeners(at) == []
