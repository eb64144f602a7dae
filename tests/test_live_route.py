"""The /live WebSocket route over real ASGI (Starlette's test client): who may follow, how many, then stamps."""
from __future__ import annotations

import json
import time
from contextlib import ExitStack

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from core import chat, jobs, tickets
from core.config import load_settings
from core.feed import feed_of
from core.recent import DIRECTORY
from views import route as routing

SECRET = "cookie-secret-never-shown"
AUTH = {  # what makes login mode: an [auth] section in the secrets
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": SECRET,
    "client_id": "channel-chat",
    "client_secret": "client-secret-never-shown",
    "server_metadata_url": "http://127.0.0.1:9400/.well-known/openid-configuration",
}
ANN = "http://127.0.0.1:9400 ann-sub"  # a ticket's subject: the login's issuer and subject


def serve(route: routing.LiveRoute, address: str = "testclient") -> TestClient:
    """A test client (from ``address``) of an app that mounts ``route`` as app.py does."""
    return TestClient(Starlette(routes=[WebSocketRoute(routing.LIVE_PATH, route.serve)]), client=(address, 50000))


@pytest.fixture
def route(app_db):
    return routing.LiveRoute()


@pytest.fixture
def client(route):
    with serve(route) as test_client:
        yield test_client


@pytest.fixture
def login_client(app_db):
    with serve(routing.LiveRoute(settings=lambda: load_settings({"auth": AUTH}))) as test_client:
        yield test_client


def refused(client, url: str, **kwargs) -> WebSocketDisconnect:
    """How the route ended a socket that it closed before sending anything."""
    with pytest.raises(WebSocketDisconnect) as ended:
        with client.websocket_connect(url, **kwargs) as socket:
            socket.receive_text()
    return ended.value


def url(topics, ticket: str | None = None) -> str:
    query = ",".join(str(t) for t in topics)
    return f"{routing.LIVE_PATH}?topics={query}" + (f"&ticket={ticket}" if ticket is not None else "")


def ticket_for(topics, secret: str = SECRET, expires: float | None = None) -> str:
    return tickets.sign(secret, ANN, topics, int(expires or tickets.expiry(time.time())))


# what it sends ------------------------------------------------------------------------------------
def test_route_sends_current_stamps_then_each_change(client, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "c", reply_policy="off")
    feed = feed_of(app_db)
    with client.websocket_connect(url([channel, DIRECTORY])) as socket:
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
    with client.websocket_connect(url([mine])) as socket:
        socket.receive_text()
        chat.send_message(app_db, other, ann, "elsewhere")
        chat.send_message(app_db, mine, ann, "here")
        assert json.loads(socket.receive_text()) == {str(mine): feed_of(app_db).current(mine)}


def test_a_content_socket_gets_its_channels_messages_then_each_change_with_its_stamp(client, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel, other = (chat.create_channel(app_db, name, reply_policy="off") for name in ("c", "other"))
    chat.send_message(app_db, channel, ann, "before **the** socket")
    feed = feed_of(app_db)
    with client.websocket_connect(f"{url([channel, DIRECTORY])}&content=1") as socket:
        first = json.loads(socket.receive_text())
        assert first["channel"] == channel and [e["html"] for e in first["messages"]] == [
            "<p>before <strong>the</strong> socket</p>"]  # rendered once on the server
        assert first["stamps"] == {str(channel): feed.current(channel), str(DIRECTORY): feed.current(DIRECTORY)}
        chat.send_message(app_db, other, ann, "elsewhere")  # never reaches this socket, as text or stamp
        sent = chat.send_message(app_db, channel, ann, "<img src=x onerror=alert(1)> hi")
        pushed = json.loads(socket.receive_text())
        [entry] = pushed["messages"]  # only what changed: not the message the socket already has
        assert (entry["id"], entry["author"], entry["status"]) == (sent, "Ann", "complete")
        assert entry["html"] == "<p>&lt;img src=x onerror=alert(1)&gt; hi</p>"
        assert pushed["stamps"] == {str(channel): feed.current(channel)}  # one frame: the content and its stamp


def test_a_streaming_reply_arrives_as_growing_versions_of_one_entry(client, app_db):
    from core import replies

    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "c", reply_policy="every")
    with client.websocket_connect(f"{url([channel])}&content=1") as socket:
        socket.receive_text()  # the stamps (the channel is empty: no content yet)
        chat.send_message(app_db, channel, ann, "hi @ai")
        job = jobs.claim_next_job(app_db, owner="tester")
        for text in ("Hel", "Hello", "Hello there"):
            assert replies.stream_reply(app_db, job.reply_id, text, job.id)
        seen: list[dict] = []
        while not seen or seen[-1]["html"] != "<p>Hello there</p>":
            frame = json.loads(socket.receive_text())
            seen += [e for e in frame.get("messages", []) if e["ai"]]
        shown = [e["html"] for e in seen]  # each frame carries the newest text (a frame may cover several writes)
        assert shown[-1] == "<p>Hello there</p>" and set(shown) <= {"", "<p>Hel</p>", "<p>Hello</p>", "<p>Hello there</p>"}
        versions = [e["version"] for e in seen]
        assert versions == sorted(versions) and len({e["id"] for e in seen}) == 1
        assert seen[-1]["asked_by"] == [ann]  # who may stop it (the list shows Stop to them, and admins)


def test_content_needs_a_channel(client):
    assert refused(client, f"{url([DIRECTORY])}&content=1").code == routing.POLICY_VIOLATION


def test_the_app_mounts_the_route(app_db):
    import app

    [mounted] = [r for r in app.app._user_routes if getattr(r, "path", None) == routing.LIVE_PATH]
    assert mounted.endpoint == routing.live_route
    with TestClient(Starlette(routes=[mounted])) as test_client:
        with test_client.websocket_connect(url([DIRECTORY])) as socket:
            assert json.loads(socket.receive_text()) == {"0": feed_of(app_db).current(DIRECTORY)}


@pytest.mark.parametrize("topics", ["", "x", "1,2,3", "-1", "1;DROP"])
def test_bad_topics_are_refused(client, topics):
    assert refused(client, f"{routing.LIVE_PATH}?topics={topics}").code == routing.POLICY_VIOLATION


# who asks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["https://elsewhere.example", "http://testserver.elsewhere.example", "null",
                                    "http://testserver:8080", "http://[bad"])
def test_a_page_on_another_site_is_refused(client, origin):
    assert refused(client, url([DIRECTORY]), headers={"origin": origin}).code == routing.POLICY_VIOLATION


@pytest.mark.parametrize("origin", ["http://testserver", "https://TestServer", None])
def test_the_apps_own_pages_and_programs_are_served(client, app_db, origin):
    headers = {"origin": origin} if origin else {}  # a program sends no Origin; a browser always does
    with client.websocket_connect(url([DIRECTORY]), headers=headers) as socket:
        assert json.loads(socket.receive_text()) == {"0": feed_of(app_db).current(DIRECTORY)}


def test_login_mode_refuses_a_socket_without_a_ticket(login_client):
    ended = refused(login_client, url([DIRECTORY]))
    assert ended.code == routing.NOT_ADMITTED and "no ticket" in ended.reason


def test_login_mode_refuses_tickets_that_do_not_admit(login_client, app_db):
    channel = chat.create_channel(app_db, "c", reply_policy="off")
    good = ticket_for([channel, DIRECTORY])
    subject, topics, expires, mac = good.split(".")
    for ticket, why in [
        (ticket_for([channel, DIRECTORY], secret="a guessed secret"), "did not sign"),
        (f"{subject}.{topics}.{int(expires) + 60}.{mac}", "did not sign"),  # a later expiry, the old signature
        (f"{tickets._b64(b'http://127.0.0.1:9400 boss-sub')}.{topics}.{expires}.{mac}", "did not sign"),
        (ticket_for([channel, DIRECTORY], expires=time.time() - 1), "expired"),
        (ticket_for([channel, DIRECTORY], expires=time.time() + 3600), "longer"),
        (ticket_for([channel]), "other topics"),  # signed for the channel alone, asked for more
        ("x", "malformed"),
        (good + "A" * 2000, "malformed"),
    ]:
        ended = refused(login_client, url([channel, DIRECTORY], ticket))
        assert (ended.code, why in ended.reason) == (routing.NOT_ADMITTED, True), (ticket, ended.reason)
    with login_client.websocket_connect(url([channel, DIRECTORY], good)) as socket:  # the page's own ticket
        assert set(json.loads(socket.receive_text())) == {str(channel), str(DIRECTORY)}


def test_login_mode_follows_with_a_valid_ticket_until_it_runs_out(login_client, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "c", reply_policy="off")
    with login_client.websocket_connect(url([channel], ticket_for([channel], expires=time.time() + 2))) as socket:
        socket.receive_text()
        chat.send_message(app_db, channel, ann, "hello")
        assert json.loads(socket.receive_text()) == {str(channel): feed_of(app_db).current(channel)}
        started = time.monotonic()
        with pytest.raises(WebSocketDisconnect) as ended:
            socket.receive_text()
    assert ended.value.code == routing.NOT_ADMITTED and "expired" in ended.value.reason
    assert time.monotonic() - started < 3  # closed when the ticket ran out: the listener shows its newer one


def test_open_mode_ignores_tickets(client, app_db):
    with client.websocket_connect(url([DIRECTORY], "anything")) as socket:
        assert json.loads(socket.receive_text()) == {"0": feed_of(app_db).current(DIRECTORY)}


# how many, and how much -------------------------------------------------------------------------
def test_sockets_beyond_the_per_client_cap_are_refused(route, client, app_db, monkeypatch):
    monkeypatch.setenv("LIVE_SOCKETS_PER_CLIENT", "2")
    with ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(client.websocket_connect(url([DIRECTORY]))).receive_text()
        ended = refused(client, url([DIRECTORY]))
        assert ended.code == routing.TOO_MANY and "too many" in ended.reason
        with serve(route, address="192.0.2.7") as elsewhere:  # another address has sockets of its own
            with elsewhere.websocket_connect(url([DIRECTORY])) as socket:
                socket.receive_text()
    assert _eventually(lambda: route.open_sockets == 0)  # each closed socket gave its place back
    with client.websocket_connect(url([DIRECTORY])) as socket:
        socket.receive_text()


def test_sockets_beyond_the_total_cap_are_refused(route, app_db, monkeypatch):
    monkeypatch.setenv("LIVE_SOCKETS_TOTAL", "2")
    with ExitStack() as stack:
        for address in ("192.0.2.1", "192.0.2.2"):
            client = stack.enter_context(serve(route, address=address))
            stack.enter_context(client.websocket_connect(url([DIRECTORY]))).receive_text()
        third = stack.enter_context(serve(route, address="192.0.2.3"))
        assert refused(third, url([DIRECTORY])).code == routing.TOO_MANY
    assert _eventually(lambda: route.open_sockets == 0)


def test_a_client_that_floods_frames_is_closed(client, route):
    with client.websocket_connect(url([DIRECTORY])) as socket:
        socket.receive_text()
        for _ in range(routing.CLIENT_FRAMES + 1):
            socket.send_text("hi")
        with pytest.raises(WebSocketDisconnect) as ended:
            socket.receive_text()
    assert ended.value.code == routing.POLICY_VIOLATION
    assert _eventually(lambda: route.open_sockets == 0)


def test_a_client_that_sends_a_large_frame_is_closed(client):
    with client.websocket_connect(url([DIRECTORY])) as socket:
        socket.receive_text()
        socket.send_bytes(b"x" * (routing.CLIENT_FRAME_SIZE + 1))
        with pytest.raises(WebSocketDisconnect) as ended:
            socket.receive_text()
    assert ended.value.code == routing.MESSAGE_TOO_BIG


def test_a_few_small_frames_are_read_and_ignored(client, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "c", reply_policy="off")
    with client.websocket_connect(url([channel])) as socket:
        socket.receive_text()
        for _ in range(routing.CLIENT_FRAMES):
            socket.send_text("hello?")
        chat.send_message(app_db, channel, ann, "still here")
        assert json.loads(socket.receive_text()) == {str(channel): feed_of(app_db).current(channel)}


def _eventually(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# private channels and direct messages ---------------------------------------------------------------
def bound(app_db, subject: str, name: str) -> int:
    """The user a login of the test provider speaks as (its ticket subject is ``ISSUER subject``)."""
    from core import accounts

    return accounts.user_for(app_db, accounts.Identity("http://127.0.0.1:9400", subject, None, None, name)).id


def test_login_mode_refuses_a_private_topic_the_tickets_person_cannot_read(login_client, app_db):
    from core import membership

    ann, bob = bound(app_db, "ann-sub", "Ann"), bound(app_db, "bob-sub", "Bob")
    hiring = membership.create_private_channel(app_db, bob, "hiring")
    dm = membership.open_direct(app_db, bob, [chat.create_user(app_db, "Cy")])
    chat.send_message(app_db, hiring, bob, "the offer is 90k")
    for topics in ([hiring, DIRECTORY], [dm]):
        for content in ("", "&content=1"):
            ended = refused(login_client, url(topics, ticket_for(topics)) + content)  # Ann's ticket, signed
            assert ended.code == routing.NOT_ADMITTED and "not a member" in ended.reason
    membership.invite(app_db, bob, hiring, ann)
    with login_client.websocket_connect(f"{url([hiring], ticket_for([hiring]))}&content=1") as socket:
        assert "90k" in socket.receive_text()  # a member is served
    assert ann


def test_a_login_not_yet_bound_to_a_user_reads_public_topics_only(login_client, app_db):
    from core import membership

    bob = bound(app_db, "bob-sub", "Bob")
    hiring = membership.create_private_channel(app_db, bob, "hiring")
    public = chat.create_channel(app_db, "general", reply_policy="off")
    assert refused(login_client, url([hiring], ticket_for([hiring]))).code == routing.NOT_ADMITTED
    with login_client.websocket_connect(url([public], ticket_for([public]))) as socket:
        assert set(json.loads(socket.receive_text())) == {str(public)}


def test_a_removed_members_socket_gets_no_further_frame(login_client, app_db):
    from core import membership

    ann, bob = bound(app_db, "ann-sub", "Ann"), bound(app_db, "bob-sub", "Bob")
    hiring = membership.create_private_channel(app_db, bob, "hiring")
    membership.invite(app_db, bob, hiring, ann)
    with login_client.websocket_connect(f"{url([hiring, DIRECTORY], ticket_for([hiring, DIRECTORY]))}&content=1") as socket:
        socket.receive_text()
        chat.send_message(app_db, hiring, bob, "still with us")
        assert "still with us" in socket.receive_text()
        membership.remove(app_db, bob, hiring, ann)
        chat.send_message(app_db, hiring, bob, "after Ann left: the offer is 90k")
        with pytest.raises(WebSocketDisconnect) as ended:
            while True:
                assert "90k" not in socket.receive_text()  # neither the text nor any stamp of it
    assert ended.value.code == routing.NOT_ADMITTED and "no longer a member" in ended.value.reason


def test_open_mode_follows_private_channels_as_the_page_shows_them(client, app_db):
    from core import membership

    hiring = membership.create_private_channel(app_db, chat.create_user(app_db, "Bob"), "hiring")
    with client.websocket_connect(url([hiring])) as socket:  # open mode has no identity to check (README)
        assert set(json.loads(socket.receive_text())) == {str(hiring)}
