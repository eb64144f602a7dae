"""The /live WebSocket route (mounted by app.py's st.App): who may follow which topics, how many at once, then stamps or content.

It sends each topic's version stamp when a browser connects and whenever a commit changes it; with
``content=1`` the channel's changed messages too (core.listing's entries, serialized once per version
and shared by the channel's sockets). It asks who it serves: the page must be this app's (Origin); in
login mode the listener shows a ticket the page signed for the signed-in person and these topics
(core/tickets.py), and a socket ends when its ticket does; a private channel or direct message is followed
only by a socket whose ticket's person may read it (core.membership), checked at connect and again before
every frame of it, so a member removed gets nothing more; each client address and the process hold at
most so many sockets; and a client that sends frames (the listener sends none) is closed. Refusals the
listener must act on are close codes of the app's own (NOT_ADMITTED, TOO_MANY), sent after the handshake
so that a browser sees them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from typing import Callable
from urllib.parse import urlsplit

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from core import accounts, listing, membership, tickets
from core.config import Settings
from core.errors import ChatError
from core.feed import feed_of
from core.recent import DIRECTORY
from core.store import Database
from views.common import get_settings, open_db  # the pages' own settings and database

log = logging.getLogger(__name__)

LIVE_PATH = "/live"  # custom routes ignore server.baseUrlPath: behind a prefix-only proxy the fallback poll serves
MAX_TOPICS = 2  # a page follows its channel and the directory (users and channels lists)
# Close codes: RFC 6455's, and two of the app's own (4000-4999) that views/live.js acts on. A refusal before the
# handshake reaches a browser as a failed connection (1006) whatever the code: only other sites' pages get one.
POLICY_VIOLATION = 1008  # before the handshake: bad topics, or a page on another site; after it: too many frames
MESSAGE_TOO_BIG = 1009  # a frame larger than CLIENT_FRAME_SIZE
SERVER_ERROR = 1011  # the settings or the database cannot be read (the listener retries with back-off)
NOT_ADMITTED = 4401  # login mode: no ticket, a forged or expired one, one for other topics; or the ticket ran out
TOO_MANY = 4429  # beyond LIVE_SOCKETS_PER_CLIENT or LIVE_SOCKETS_TOTAL: the listener waits 30 s, doubling to 5 min
CLIENT_FRAMES = 8  # frames a client may send in all: the listener sends none, so one that sends more is not ours
CLIENT_FRAME_SIZE = 1024  # characters (or bytes) in one of them
CLOSE_REASON_CHARS = 120  # a close frame's reason must fit in 123 bytes (our reasons are ASCII)

# the route ----------------------------------------------------------------------------------------
class LiveRoute:
    """WebSocket /live?topics=3,0[&ticket=...]: who may follow, how many at once, then {topic: stamp} per commit.

    Settings, the database and the clock are passed in (tests hand in login mode and small caps).
    """

    def __init__(self, settings: Callable[[], Settings | None] = get_settings,
                 database: Callable[[], Database] = open_db, clock: Callable[[], float] = time.time) -> None:
        self._settings, self._database, self._clock = settings, database, clock
        self._lock = threading.Lock()  # the counts below are changed from the event loop and read by tests
        self._per_client: Counter[str] = Counter()
        self._total = 0

    @property
    def open_sockets(self) -> int:
        return self._total

    async def serve(self, websocket: WebSocket) -> None:
        """The endpoint (a method: Starlette treats any other callable object as a whole ASGI app)."""
        topics = _topics(websocket.query_params.get("topics"))
        content = websocket.query_params.get("content") == "1"
        if topics is None or not same_origin(websocket) or (content and topics[0] == DIRECTORY):
            await websocket.close(code=POLICY_VIOLATION)  # before the handshake: a browser sees only a refusal
            return
        try:
            # Outside a script run a bad setting is drawn nowhere and get_settings() returns None.
            settings = await run_in_threadpool(self._settings)
        except ChatError as error:
            settings = None
            log.warning("live route: %s", error)
        if settings is None:
            await _refuse(websocket, SERVER_ERROR, "the server's settings need fixing")
            return
        expires, person = None, None
        if settings.login:
            try:
                ticket = tickets.verify(settings.live_secret or "", websocket.query_params.get("ticket"), topics,
                                        self._clock())
            except tickets.TicketRefused as refused:
                await _refuse(websocket, NOT_ADMITTED, str(refused))
                return
            expires, person = ticket.expires, ticket.subject
        client = websocket.client.host if websocket.client else "unknown"
        if not self._take_slot(client, settings):
            await _refuse(websocket, TOO_MANY, "too many live connections; the page checks by itself meanwhile")
            return
        try:
            await self._follow(websocket, topics, expires, topics[0] if content else None, settings.image_hosts,
                               person)
        finally:
            self._give_back(client)

    async def _follow(self, websocket: WebSocket, topics: list[int], expires: int | None, channel: int | None,
                      image_hosts: frozenset[str], person: str | None = None) -> None:
        """Open the database, accept, and send stamps until the browser leaves, oversteps, or its ticket ends;
        with a ``channel``, each change of its messages goes first, as content (core/listing.py's entries).

        ``person`` (login mode: the ticket's "issuer subject") must be able to read every channel topic; the
        non-public ones are checked again before each frame that concerns them. Open mode has no person and
        follows any channel: there anyone may pick any name, so the page would show it too (see the README).
        """
        try:
            db = await run_in_threadpool(self._database)  # opening and migrating the file must not block the loop
            reader, closed, admitted = (await run_in_threadpool(_admission, db, topics, person) if expires is not None
                                        else (None, [], True))
        except ChatError as error:
            log.warning("live route: %s", error)
            await _refuse(websocket, SERVER_ERROR, "the database cannot be opened")
            return
        if not admitted:
            await _refuse(websocket, NOT_ADMITTED, "not a member of a channel asked for")
            return
        await websocket.accept()
        feed = feed_of(db)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        subscription = feed.subscribe(topics, wake=lambda: loop.call_soon_threadsafe(ready.set))
        reading = asyncio.ensure_future(_read_bounded(websocket, ready))
        closing: tuple[int, str] | None = None
        sent = listing.Sent()

        async def still_admitted(stamps: dict[str, str]) -> bool:
            """Whether the person still reads every private topic this frame concerns (a removal ends the socket)."""
            concerned = [t for t in closed if str(t) in stamps]
            try:
                return not concerned or all(await run_in_threadpool(
                    lambda: [membership.can_read(db, reader, t) for t in concerned]))
            except ChatError as error:  # not known now is not a yes: the socket ends, the page checks by itself
                log.warning("live route: %s", error)
                return False

        async def send(stamps: dict[str, str]) -> bool:
            """One frame: the channel's changed messages (content sockets), then the stamps they bring; False
            (nothing sent) when the person may no longer read a channel it concerns."""
            if not await still_admitted(stamps):
                return False
            entries: list[str] = []
            if channel is not None and str(channel) in stamps:
                snap = await _shared_snapshot(db, feed.recent.version(channel), channel, image_hosts)
                entries = sent.changed(snap) if snap is not None else []
            if entries:
                await websocket.send_text(f'{{"channel":{channel},"messages":[{",".join(entries)}],'
                                          f'"stamps":{json.dumps(stamps)}}}')
            elif stamps:
                await websocket.send_text(json.dumps(stamps))
            return True

        try:
            if not await send({str(t): feed.current(t) for t in topics}):
                closing = (NOT_ADMITTED, "no longer a member of a channel followed")
            while closing is None and not reading.done():
                if expires is not None:  # login mode: the ticket admits until then, and a new one is needed after
                    left = expires - self._clock()
                    if left <= 0:
                        closing = (NOT_ADMITTED, "the ticket expired")
                        break
                    try:
                        await asyncio.wait_for(ready.wait(), left)
                    except TimeoutError:
                        continue
                else:
                    await ready.wait()
                ready.clear()
                changes = subscription.take()
                if any(change.topic is None for change in changes):  # fell behind, or anything may have changed
                    stamps = {str(t): feed.current(t) for t in topics}
                else:
                    stamps = {str(change.topic): feed.stamp(change.version) for change in changes}
                if not await send(stamps):
                    closing = (NOT_ADMITTED, "no longer a member of a channel followed")
            if closing is None and reading.done():
                closing = reading.result()  # the client sent too much (None: it left)
            if closing is not None:
                await websocket.close(*closing)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the browser went away mid-send
        finally:
            subscription.close()
            reading.cancel()

    def _take_slot(self, client: str, settings: Settings) -> bool:
        with self._lock:
            if self._total >= settings.live_sockets_total or \
                    self._per_client[client] >= settings.live_sockets_per_client:
                return False
            self._total += 1
            self._per_client[client] += 1
            return True

    def _give_back(self, client: str) -> None:
        with self._lock:
            self._total -= 1
            self._per_client[client] -= 1
            if not self._per_client[client]:
                del self._per_client[client]


live_route = LiveRoute().serve  # what app.py mounts at LIVE_PATH


_making: dict[tuple[int, int, int], asyncio.Future] = {}  # snapshots being read, so that sockets wait for one read


async def _shared_snapshot(db: Database, version: int, channel: int, image_hosts: frozenset[str]) -> listing.Snapshot | None:
    """The channel's snapshot at ``version``: from the cache, or read once off the event loop while every other
    socket of the channel waits for that read (a commit wakes them all at once)."""
    snap = listing.cached_snapshot(db, channel, version)
    if snap is not None:
        return snap
    key = (id(db), channel, version)
    making = _making.get(key)
    if making is None:
        making = _making[key] = asyncio.ensure_future(run_in_threadpool(_snapshot, db, channel, image_hosts))
        making.add_done_callback(lambda _: _making.pop(key, None))
    return await asyncio.shield(making)


def _snapshot(db: Database, channel: int, image_hosts: frozenset[str]) -> listing.Snapshot | None:
    """The channel's entries now, or None when it cannot be read just now (the stamps make the page read it)."""
    try:
        return listing.snapshot(db, channel, image_hosts)
    except ChatError as error:
        log.warning("live route: channel %s: %s", channel, error)
        return None


def _admission(db: Database, topics: list[int], person: str | None) -> tuple[int | None, list[int], bool]:
    """Login mode: the ticket's person ("issuer subject") as a user id (None: not bound yet, reads public channels
    only), the private and direct topics, and whether that person reads every one of them now."""
    issuer, _, subject = (person or "").partition(" ")
    reader = accounts.bound_user_id(db, issuer, subject) if person else None
    closed = membership.closed_topics(db, topics)
    return reader, closed, all(membership.can_read(db, reader, topic) for topic in closed)


def same_origin(websocket: WebSocket) -> bool:
    """Whether the page that opened the socket is this app's (or one in server.corsAllowedOrigins).

    A browser always sends Origin: a page on another site cannot pass as this one. A program sends none,
    and no page can make a browser do that, so it passes here (login mode still asks for a ticket).
    """
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host") or ""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return (bool(host) and netloc.lower() == host.lower()) or origin in (st.get_option("server.corsAllowedOrigins") or ())


def _topics(raw: str | None) -> list[int] | None:
    try:
        topics = [int(part) for part in (raw or "").split(",") if part.strip()]
    except ValueError:
        return None
    if not topics or len(topics) > MAX_TOPICS or any(t < 0 for t in topics):
        return None
    return list(dict.fromkeys(topics))


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code``: a browser learns a code only from a socket that opened."""
    log.debug("live route refused %s: %s", websocket.client, reason)
    await websocket.accept()
    await websocket.close(code=code, reason=reason[:CLOSE_REASON_CHARS])


async def _read_bounded(websocket: WebSocket, ready: asyncio.Event) -> tuple[int, str] | None:
    """Read what the browser sends (the listener sends nothing) until it leaves; why to close it if it sends much."""
    frames = 0
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            frames += 1
            if len(message.get("text") or message.get("bytes") or "") > CLIENT_FRAME_SIZE:
                return MESSAGE_TOO_BIG, "the live route reads no large frames"
            if frames > CLIENT_FRAMES:
                return POLICY_VIOLATION, "the live route reads no more frames"
    except (WebSocketDisconnect, RuntimeError):
        return None
    finally:
        ready.set()  # wake the sender loop: it ends (and closes) when this does
