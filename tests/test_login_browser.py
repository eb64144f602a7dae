"""Login mode in Debian's Chromium: a real OIDC provider (oidc-provider-mock) started here on 127.0.0.1, Streamlit's
st.login through it, two people in two windows, logout, attempts to speak as someone else, roles, and a remote image
that no window fetches."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser import (
    INPUT,
    MESSAGE,
    VIEWPORT,
    chromium,
    free_port,
    streamlit_server,
    type_and_send,
    wait_page,
)
from fake_openai import FakeOpenAI, Script
from itsdangerous import URLSafeTimedSerializer

from core import chat
from core.store import connect

pytestmark = pytest.mark.browser

REFRESH = 0.5  # seconds between the chat page's checks for news
SECRETS = {  # every one of them must stay out of pages and the server's log
    "cookie_secret": "browser-cookie-secret-0123456789",
    "client_secret": "browser-client-secret-0123456789",
    "openai": "sk-browser-openai-key-0123456789",
}
PEOPLE = {
    "ann": {"email": "ann@example.com", "name": "Ann", "email_verified": True},
    "bob": {"email": "bob@example.com", "name": "Bob", "email_verified": True},
    "boss": {"email": "boss@example.com", "name": "Boss", "email_verified": True},
}
PROVIDER_START_S = 20.0  # the provider answering its discovery document on a busy machine


class _Pixel(BaseHTTPRequestHandler):
    """An image host that records every request (a tracking pixel's owner)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(b"\x89PNG\r\n\x1a\n")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def image_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pixel)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def oidc_provider(folder):
    """`oidc-provider-mock -p PORT` on 127.0.0.1 with Ann, Bob and Boss's claims; stopped afterwards."""
    port = free_port()
    log = open(folder / "oidc.log", "wb")
    process = subprocess.Popen(["oidc-provider-mock", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PROVIDER_START_S
        while True:
            try:
                urllib.request.urlopen(url + "/.well-known/openid-configuration", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"oidc-provider-mock did not start: {(folder / 'oidc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        for sub, claims in PEOPLE.items():
            request = urllib.request.Request(f"{url}/users/{sub}", data=json.dumps(claims).encode(), method="PUT",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).close()
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("login")
    db = connect(str(folder / "chat.duckdb"))
    channels = {name: chat.create_channel(db, name, reply_policy="off") for name in ("lobby", "pics", "guards", "bye")}
    channels["asks"] = chat.create_channel(db, "asks")  # the AI answers every message here (the local fake model)
    db.close()
    port = free_port()
    with oidc_provider(folder) as provider, image_host() as pixels, FakeOpenAI() as model:
        (folder / "secrets.toml").write_text(
            f'ADMIN_EMAILS = "boss@example.com"\nOPENAI_API_KEY = "{SECRETS["openai"]}"\n'
            f'OPENAI_BASE_URL = "{model.base_url}"\n\n[auth]\n'
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\ncookie_secret = "{SECRETS["cookie_secret"]}"\n'
            f'client_id = "channel-chat"\nclient_secret = "{SECRETS["client_secret"]}"\n'
            f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
        )
        with streamlit_server(folder / "chat.duckdb", refresh_seconds=REFRESH, log_dir=folder, port=port,
                              extra_args=["--secrets.files", str(folder / "secrets.toml")]) as app, chromium() as browser:
            yield {"app": app, "browser": browser, "channels": channels, "pixels": pixels, "db": folder / "chat.duckdb",
                   "provider": provider, "model": model}


@pytest.fixture
def person(world):
    """Log a person in through the provider, each in a browser context (cookies) of their own; closed afterwards."""
    contexts = []

    def log_in(sub: str, channel: str = "lobby"):
        context = world["browser"].new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.goto(world["app"].url)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("input[name=sub]", timeout=20_000)  # the provider's authorize page
        page.fill("input[name=sub]", sub)
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_selector(INPUT, timeout=30_000)  # back in the app, logged in
        page.goto(f"{world['app'].url}/?channel={world['channels'][channel]}")
        page.wait_for_selector(f"{INPUT}[placeholder*='#{channel} as ']", timeout=30_000)
        return page

    yield log_in
    for context in contexts:
        context.close()


def _spoken(page) -> list[tuple[str, str]]:
    """(speaker, text) of each message drawn, read from its caption's author and its body (not its controls)."""
    return [(message.locator(".author").inner_text().strip(),
             message.locator(".text").inner_text().strip() if message.locator(".text").count() else "")
            for message in page.locator(MESSAGE).all()]


def test_two_people_in_two_windows_each_message_carries_its_author(person):
    ann, bob = person("ann"), person("bob")
    assert "as Ann" in ann.get_attribute(INPUT, "placeholder") and "as Bob" in bob.get_attribute(INPUT, "placeholder")
    type_and_send(ann, "Hello from Ann")
    wait_page(bob, lambda p: ("Ann", "Hello from Ann") in _spoken(p), what="Ann's message in Bob's window")
    type_and_send(bob, "Hi Ann, Bob here")
    for page in (ann, bob):
        wait_page(page, lambda p: _spoken(p)[-2:] == [("Ann", "Hello from Ann"), ("Bob", "Hi Ann, Bob here")],
              what="both messages with their authors")


def test_logout_ends_the_session(world, person):
    ann = person("ann", channel="bye")
    ann.get_by_role("button", name="Log out").click()
    # The provider offers to end its session too (OIDC end_session), then sends the browser back to the app.
    ann.wait_for_selector("text=End Session", timeout=20_000)
    ann.get_by_role("button", name="End session").click()
    ann.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    assert not [c for c in ann.context.cookies() if c["name"].startswith("_streamlit_user")]
    ann.goto(f"{world['app'].url}/?channel={world['channels']['bye']}")
    ann.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    ann.wait_for_timeout(1000)
    assert ann.locator(INPUT).count() == 0 and ann.locator(MESSAGE).count() == 0


def test_nobody_speaks_as_someone_else(world, person):
    bob = person("bob", channel="guards")
    ann = person("ann", channel="guards")
    # Query parameters naming another user change nothing.
    ann.goto(f"{world['app'].url}/?channel={world['channels']['guards']}&user=Bob&user_id=2&as=bob")
    ann.wait_for_selector(f"{INPUT}[placeholder*='as Ann']", timeout=30_000)
    type_and_send(ann, "still Ann, whatever the link says")
    wait_page(bob, lambda p: ("Ann", "still Ann, whatever the link says") in _spoken(p), what="the message, as Ann's")
    # Taking another person's name is refused.
    ann.locator("[data-testid=stSidebar]").get_by_text("Rename").click()
    ann.get_by_label("Display name").fill("Bob")
    ann.get_by_role("button", name="Save name").click()
    wait_page(ann, lambda p: p.get_by_text("already exists").count(), what="the refusal")
    # An identity cookie forged for Bob (well formed, signed without the app's cookie secret) is no login at all.
    (cookie,) = [c for c in ann.context.cookies() if c["name"] == "_streamlit_user"]
    claims = {"iss": world["provider"], "sub": "bob", "email": "bob@example.com", "name": "Bob", "is_logged_in": True,
              "origin": world["app"].url, "provider": "default"}
    forged = URLSafeTimedSerializer("a-guessed-secret", salt="_streamlit_user").dumps(json.dumps(claims))
    ann.context.add_cookies([dict(cookie, value=forged)])
    ann.goto(f"{world['app'].url}/?channel={world['channels']['guards']}")
    ann.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    assert ann.locator(INPUT).count() == 0


def test_a_non_admin_cannot_reach_the_console_or_exports(world, person):
    for sub, admin in (("ann", False), ("boss", True)):
        page = person(sub)
        page.goto(f"{world['app'].url}/tables")
        page.wait_for_selector("[data-testid=stDataFrame]", timeout=30_000)  # the page has run to its table
        page.wait_for_timeout(500)
        radio = page.locator("[data-testid=stRadio]").first  # the view switch (the other radio sorts)
        views = [text for text in radio.locator("label").all_inner_texts() if text != "View"]
        downloads = page.locator("[data-testid=stDownloadButton]").count()
        if admin:
            assert "SQL console" in views and downloads == 2
        else:
            assert views == ["Browse", "Overview"] and downloads == 0
            assert page.get_by_text("for admins (ADMIN_EMAILS)").count() == 1


def test_a_remote_image_is_not_fetched_when_another_window_shows_it(world, person):
    pixel = f"http://127.0.0.1:{world['pixels'].server_port}/pixel.png"
    ann, bob = person("ann", channel="pics"), person("bob", channel="pics")
    type_and_send(ann, f"look ![tracker]({pixel}) and [this](data:text/html,<script>alert(1)</script>) "
                       "and [docs](https://docs.streamlit.io)")
    wait_page(bob, lambda p: p.locator(f"{MESSAGE} a[href='{pixel}']").count(),
              what="the image, as a link, in Bob's window")
    bob.wait_for_timeout(1500)  # time enough for any fetch
    for page in (ann, bob):
        assert page.locator(f"{MESSAGE} img[src*='127.0.0.1:{world['pixels'].server_port}']").count() == 0
        hrefs = page.locator(f"{MESSAGE} a").evaluate_all("links => links.map(l => l.getAttribute('href') || '')")
        assert pixel in hrefs and "https://docs.streamlit.io" in hrefs
        assert not [h for h in hrefs if re.match(r"\s*(data|javascript):", h, re.I)]
    assert world["pixels"].requests == []


def test_the_server_log_holds_no_secret(world, person):
    person("boss")  # at least one full login and page run have been logged
    log = world["app"].log(tail=10**8)
    assert "Uvicorn running" in log or "You can now view" in log  # the whole log was read
    for name, secret in SECRETS.items():
        assert secret not in log, f"the {name} is in the server log"


def test_the_live_route_admits_a_logged_in_window_and_refuses_a_socket_without_its_ticket(world, person):
    ann = person("ann")
    ann.wait_for_function("window.__channelChatPushes >= 1", timeout=10_000)  # the page's ticket admitted it
    code = ann.evaluate("""() => new Promise((done) => {
        const socket = new WebSocket(`ws://${location.host}/live?topics=0`);  // the same page, no ticket
        socket.onclose = (event) => done(event.code);
    })""")
    assert code == 4401  # views/route.py's NOT_ADMITTED, which the listener understands
    assert ann.evaluate("window.__channelChatClosed") is None  # the page's own socket stayed open


AI_REPLY = "article.chat-message.ai"


def _forge(page, do: str, message_id: str) -> None:
    """What a crafted page could send: the list's own trigger, for an act its buttons do not offer."""
    page.evaluate("([what, id]) => window.__channelChatCurrent.trigger('action', {do: what, id: id, n: 100000 + id})",
                  [do, int(message_id)])


def test_nobody_else_is_offered_or_allowed_stop_and_retry_of_a_reply(world, person):
    """Bob sees no Stop or Retry on the reply Ann asked for, and what a crafted page sends for him is refused by core
    (the same crafted act from Ann's page works: it reaches core)."""
    model = world["model"]
    model.push(Script(hang=True), Script(hang=True))  # Ann's reply, then its retry, wait on the model: stoppable
    ann, bob = person("ann", channel="asks"), person("bob", channel="asks")
    type_and_send(ann, "Ann asks the AI something")
    wait_page(ann, lambda p: p.locator(f"{AI_REPLY} button.act.stop").count() == 1, what="Stop on Ann's reply")
    wait_page(bob, lambda p: p.locator(AI_REPLY).count() == 1, what="the reply in Bob's window")
    reply_id = bob.locator(AI_REPLY).get_attribute("data-message-id")
    bob.wait_for_timeout(1000)  # the list has had its data, asked_by included
    assert bob.locator(f"{AI_REPLY} button.act.stop, {AI_REPLY} button.act.retry").count() == 0

    _forge(bob, "stop", reply_id)
    ann.wait_for_timeout(2000)
    assert ann.locator(f"{AI_REPLY} button.act.stop").count() == 1  # still running: core refused Bob's stop
    assert bob.locator(AI_REPLY).get_by_text("Stopped.").count() == 0
    _forge(ann, "stop", reply_id)  # the same act from the page of the person who asked
    wait_page(ann, lambda p: p.locator(f"{AI_REPLY} button.act.retry").count() == 1, what="Retry on Ann's reply")
    wait_page(bob, lambda p: p.locator(AI_REPLY).get_by_text("Stopped.").count() == 1, what="the stop in Bob's window")
    bob.wait_for_timeout(1000)
    assert bob.locator(f"{AI_REPLY} button.act.stop, {AI_REPLY} button.act.retry").count() == 0

    asked = len(model.requests)
    _forge(bob, "retry", reply_id)
    ann.wait_for_timeout(2000)
    assert ann.locator(f"{AI_REPLY} button.act.retry").count() == 1 and len(model.requests) == asked
    ann.locator(f"{AI_REPLY} button.act.retry").click()  # Ann's own Retry: a new attempt goes to the model
    wait_page(ann, lambda p: len(model.requests) > asked and p.locator(f"{AI_REPLY} button.act.stop").count() == 1,
              what="Ann's retry running")
    ann.locator(f"{AI_REPLY} button.act.stop").click()  # and the hanging attempt ends here, not at its deadline
