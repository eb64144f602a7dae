"""The /live WebSocket route over real ASGI (Starlette's test client): stamps now, then each change."""
from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from core import chat
from core.feed import feed_of
from core.recent import DIRECTORY
from views import live


@pytest.fixture
def client(app_db):
    with TestClient(Starlette(routes=[WebSocketRoute(live.LIVE_PATH, live.live_route)])) as test_client:
        yield test_client


def test_route_sends_current_stamps_then_each_change(client, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "c", reply_policy="off")
    feed = feed_of(app_db)
    with client.websocket_connect(f"{live.LIVE_PATH}?topics={channel},{DIRECTORY}") as socket:
        assert json.loads(socket.receive_text()) == {str(channel): feed.current(channel),
                                                     str(DIRECTORY): feed.current(DIRECTORY)}
        chat.send_message(app_db, channel, ann, "a secret only members may read")
        pushed = socket.receive_text()
        assert json.loads(pushed) == {str(channel): feed.current(channel)}
        assert "secret" not in pushed and "Ann" not in pushed  # version stamps only, never text
        chat.create_user(app_db, "Bob")
        assert json.loads(socket.receive_text()) == {str(DIRECTORY): feed.current(DIRECTORY)}
    assert _eventually(lambda: feed.listeners == 0)  # the browser left: its subscription is gone


def test_changes_of_other_channels_are_not_sent(client, app_db):
    ann = chat.create_user(app_db, "Ann")
    mine, other = (chat.create_channel(app_db, name, reply_policy="off") for name in ("mine", "other"))
    with client.websocket_connect(f"{live.LIVE_PATH}?topics={mine}") as socket:
        socket.receive_text()
        chat.send_message(app_db, other, ann, "elsewhere")
        chat.send_message(app_db, mine, ann, "here")
        assert json.loads(socket.receive_text()) == {str(mine): feed_of(app_db).current(mine)}


@pytest.mark.parametrize("topics", ["", "x", "1,2,3", "-1", "1;DROP"])
def test_bad_topics_are_refused(client, topics):
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(f"{live.LIVE_PATH}?topics={topics}") as socket:
            socket.receive_text()
    assert refused.value.code == live.POLICY_VIOLATION


def test_the_login_hook_decides_who_may_subscribe(client, app_db, monkeypatch):
    monkeypatch.setattr(live, "may_subscribe", lambda websocket: websocket.cookies.get("login") == "valid")
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(f"{live.LIVE_PATH}?topics=0") as socket:
            socket.receive_text()
    assert refused.value.code == live.POLICY_VIOLATION
    client.cookies.set("login", "valid")
    with client.websocket_connect(f"{live.LIVE_PATH}?topics=0") as socket:
        assert json.loads(socket.receive_text()) == {"0": feed_of(app_db).current(DIRECTORY)}


def _eventually(condition, seconds: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
