"""The /files route (mounted by app.py's st.App): a message's file, or its thumbnail, served so that nothing in it can run.

``GET /files/<id>`` answers with the file's bytes; ``?thumb=1`` with a small upright copy of an image,
made by Pillow without any of its metadata (core.attachments.thumbnail). The media type is the one read
from the content when it was sent, never the name's. Raster images, audio and PDFs are shown inline;
everything else — SVG and HTML among them, which are text here — is a download. Every answer says
``nosniff`` and carries a Content-Security-Policy that lets nothing load or run (a PDF viewer's own
page included), and the name a download is saved as is the cleaned one, quoted per RFC 6266.

In login mode the route asks for the ticket the page signed for the signed-in person and the channel it
shows (core/tickets.py, the same ticket the live route takes): a file of a channel the ticket does not
name is refused, as is a request with no ticket or an expired one, and a file of a private channel or
direct message whose members the ticket's person is not among (core.membership.can_read).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core import accounts, attachments, membership, tickets
from core.config import Settings
from core.errors import ChatError, NotFound
from core.store import Database
from views.common import get_settings, open_db

log = logging.getLogger(__name__)

FILES_PATH = "/files/{attachment_id:int}"
# Nothing loads, nothing runs, no form posts, no framing by other sites; `sandbox` also gives a PDF or an image
# opened on its own an opaque origin, so it cannot read this app's cookies or pages.
POLICY = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'"
CACHE = "private, max-age=300"  # a file never changes under its id; private: login mode's files are per person
THUMBNAILS_CACHED = 256  # thumbnails kept in memory per process (each ~20-60 KB)


class FilesRoute:
    """GET /files/<id>[?thumb=1][&ticket=...]: one attachment, for whoever may read its channel."""

    def __init__(self, settings: Callable[[], Settings | None] = get_settings,
                 database: Callable[[], Database] = open_db, clock: Callable[[], float] = time.time) -> None:
        self._settings, self._database, self._clock = settings, database, clock

    async def serve(self, request: Request) -> Response:
        """The endpoint (a method: Starlette treats any other callable object as a whole ASGI app)."""
        return await run_in_threadpool(self._answer, request)

    def _answer(self, request: Request) -> Response:
        try:
            settings = self._settings()
            if settings is None:
                return _plain(503, "The server's settings need fixing.")
            db = self._database()
            found = attachments.get(db, request.path_params["attachment_id"])
            if settings.login:
                person = _admitted(settings, request.query_params.get("ticket"), found.channel_id, self._clock())
                if person is None:
                    return _plain(403, "Sign in to see this file (reload the page if you are signed in).")
                issuer, _, subject = person.partition(" ")
                if not membership.can_read(db, accounts.bound_user_id(db, issuer, subject), found.channel_id):
                    return _plain(403, "This file is in a channel you are not a member of.")
            data = attachments.content(db, found)
            if request.query_params.get("thumb") == "1":
                if found.kind != "image":
                    return _plain(404, "This file has no thumbnail.")
                body, media_type = _thumbnail(found.sha256, data)
                return _response(body, media_type, "inline", f"thumbnail-{found.id}.{media_type.rsplit('/', 1)[1]}")
            disposition = "inline" if found.inline else "attachment"
            return _response(data, found.media_type if found.inline else _download_type(found), disposition, found.name)
        except NotFound as error:
            return _plain(404, str(error))
        except ChatError as error:
            log.warning("files route: %s", error)
            return _plain(503, "The file cannot be read just now. Try again in a moment.")


def _admitted(settings: Settings, ticket: str | None, channel_id: int, now: float) -> str | None:
    """The ticket's person ("issuer subject") when the server signed it for this file's channel and it has not
    run out; None otherwise. Whether that person may read the channel is core.membership's to say."""
    if not ticket or not settings.live_secret:
        return None
    topics = tickets.topics_of(ticket)
    if channel_id not in topics:
        return None
    try:
        return tickets.verify(settings.live_secret, ticket, topics, now).subject
    except tickets.TicketRefused:
        return None


def _download_type(found: attachments.Attachment) -> str:
    # Text is text/plain even when it is HTML or SVG: saved to disk, never rendered by this origin.
    return found.media_type if found.media_type.startswith(("text/plain", "application/")) else attachments.UNKNOWN


_thumbnails: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
_thumbnails_lock = threading.Lock()


def _thumbnail(sha256: str, data: bytes) -> tuple[bytes, str]:
    """A content's thumbnail, made once per process (kept by its hash: the same image in two messages is one)."""
    with _thumbnails_lock:
        if sha256 in _thumbnails:
            _thumbnails.move_to_end(sha256)
            return _thumbnails[sha256]
    made = attachments.thumbnail(data)
    with _thumbnails_lock:
        _thumbnails[sha256] = made
        while len(_thumbnails) > THUMBNAILS_CACHED:
            _thumbnails.popitem(last=False)
    return made


def _response(body: bytes, media_type: str, disposition: str, name: str) -> Response:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_").replace("\\", "_")
    headers = {
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": POLICY,
        "Cache-Control": CACHE,
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    return Response(body, media_type=media_type, headers=headers)


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(text, status_code=status, headers={"X-Content-Type-Options": "nosniff",
                                                                  "Content-Security-Policy": POLICY,
                                                                  "Cache-Control": "no-store"})


files_route = FilesRoute().serve  # what app.py mounts at FILES_PATH
