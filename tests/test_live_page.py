"""The pages' live listener under AppTest: one per page, carrying the stamps the page drew.

(AppTest draws the listener as an element it does not know and cannot fire its trigger: the
trigger path itself is covered by tests/test_push_browser.py.)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

from core import chat, tickets
from core.config import load_settings
from core.feed import feed_of
from core.recent import DIRECTORY
from views import route
from message_list import listed, texts

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "http://127.0.0.1:9400"
AUTH = {  # login mode: an [auth] section in the secrets
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "cookie-secret-never-shown",
    "client_id": "channel-chat",
    "client_secret": "client-secret-never-shown",
    "server_metadata_url": f"{ISSUER}/.well-known/openid-configuration",
}


def listeners(at) -> list[tuple[str, dict]]:
    """(key, data) of each live listener the run drew, in the main area and the sidebar."""
    found = [node.proto for node in at.get("bidi_component") if node.proto.component_name == "channel_chat.live"]
    return [(proto.id.split("-", 2)[2], json.loads(proto.bytes)) for proto in found]  # id: $$ID-<hash>-<key>


def test_chat_page_mounts_one_list_that_follows_its_channel_as_content_and_the_directory(app_test, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = app_test(user_id=ann, channel_id=channel).run()
    feed = feed_of(app_db)
    assert listeners(at) == []  # the message list holds the page's one socket
    data = listed(at)
    assert data["live"] == {"path": f"/live?topics={channel},{DIRECTORY}&content=1",
                            "shown": {str(channel): feed.current(channel), str(DIRECTORY): feed.current(DIRECTORY)}}

    chat.send_message(app_db, channel, ann, "news")
    at.run()
    assert listed(at)["live"]["shown"][str(channel)] == feed.current(channel)  # the stamp of what the page now shows
    assert texts(at) == ["news"]


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
    assert not at.exception and listeners(at) == [] and listed(at)["live"] is None  # the list is fed by the fallback check


def test_in_login_mode_the_listener_carries_a_ticket_the_route_admits(app_test, app_db):
    at = app_test()
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "iss": ISSUER, "sub": "ann-sub", "email": "ann@example.com", "name": "Ann"}
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at.session_state["channel_id"] = channel
    at.run()
    assert not at.exception
    data = listed(at)["live"]
    assert data["path"] == f"/live?topics={channel},{DIRECTORY}&content=1"  # the ticket goes apart: the socket outlives it
    ticket = tickets.verify(AUTH["cookie_secret"], data["ticket"], [DIRECTORY, channel], time.time())
    assert ticket.subject == f"{ISSUER} ann-sub" and ticket.expires - time.time() > tickets.TICKET_SECONDS - 1

    live_route = route.LiveRoute(settings=lambda: load_settings({"auth": AUTH}))
    with TestClient(Starlette(routes=[WebSocketRoute(route.LIVE_PATH, live_route.serve)])) as client:
        with client.websocket_connect(f"{data['path']}&ticket={data['ticket']}",
                                      headers={"origin": "http://testserver"}) as socket:
            assert json.loads(socket.receive_text()) == data["shown"]  # what the page drew is what is current


def test_open_mode_listeners_carry_no_ticket(app_test, app_db):
    at = app_test().run()
    [(_, data)] = listeners(at)
    assert "ticket" not in data


def test_the_listener_knows_the_routes_close_codes():
    script = (ROOT / "views" / "socket.js").read_text()
    assert f"const NOT_ADMITTED = {route.NOT_ADMITTED};" in script
    assert f"const TOO_MANY = {route.TOO_MANY};" in script
    assert "LISTENER_JS" not in (ROOT / "views" / "live.py").read_text()  # front-end code in its own file
