"""Tickets for the live route: a short-lived, signed note saying who may follow which topics, until when.

In login mode the page knows who is signed in (Streamlit checked its login cookie) and the /live
route does not (it sees no st.user): the page signs a ticket, hands it to its listener, and the
route checks it. A ticket is ``subject.topics.expires.mac``, ASCII that needs no escaping in a URL:
the subject in base64url, the topics sorted (``0-5``), the expiry in Unix seconds, and an
HMAC-SHA256 of the rest under a key derived from the server's secret, never the secret itself.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from typing import Iterable

from core.errors import ChatError

TICKET_SECONDS = 300  # how long a ticket admits; a page hands its listener a new one every REFRESH_SECONDS (<= 60 s)
ROUND_SECONDS = 60  # expiries fall on whole minutes: a page that reruns often hands the same ticket, so no new data
# The derived key signs tickets and nothing else (Streamlit signs its login cookie with the secret itself).
PURPOSE = b"channel-chat /live ticket v1"
MAX_CHARS = 1024  # a longer "ticket" is refused before any work
SHAPE = re.compile(r"([A-Za-z0-9_-]{1,800})\.([0-9]{1,18}(?:-[0-9]{1,18}){0,7})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


class TicketRefused(ChatError):
    """A ticket that does not admit: missing, malformed, forged, expired, or for other topics."""


@dataclass(frozen=True)
class Ticket:
    subject: str  # who signed in, as the page named them (issuer and subject of their login)
    topics: frozenset[int]
    expires: int  # Unix seconds


def expiry(now: float) -> int:
    """When a ticket signed at ``now`` stops admitting: TICKET_SECONDS later, rounded up to a whole minute."""
    return math.ceil((now + TICKET_SECONDS) / ROUND_SECONDS) * ROUND_SECONDS


def sign(secret: str, subject: str, topics: Iterable[int], expires: int) -> str:
    """A ticket that admits ``subject`` to exactly ``topics`` until ``expires`` (Unix seconds)."""
    if not secret:
        raise ValueError("a ticket needs a secret to sign with")
    body = f"{_b64(subject.encode())}.{_topic_list(topics)}.{int(expires)}"
    return f"{body}.{_mac(secret, body)}"


def verify(secret: str, ticket: str | None, topics: Iterable[int], now: float) -> Ticket:
    """The ticket's contents if it admits to ``topics`` at ``now``; TicketRefused (saying why) if not."""
    if not secret:  # an empty key would admit tickets anyone can sign
        raise TicketRefused("this server has no secret to check tickets with")
    if not ticket:
        raise TicketRefused("no ticket: sign in and reload the page")
    match = SHAPE.fullmatch(ticket) if len(ticket) <= MAX_CHARS else None
    if match is None:
        raise TicketRefused("a malformed ticket")
    if not hmac.compare_digest(_mac(secret, ticket.rpartition(".")[0]), match[4]):
        raise TicketRefused("a ticket this server did not sign")
    expires = int(match[3])
    if expires <= now:
        raise TicketRefused("an expired ticket")
    if expires > now + TICKET_SECONDS + ROUND_SECONDS:
        raise TicketRefused("a ticket that lasts longer than any this server signs")
    if match[2] != _topic_list(topics):
        raise TicketRefused("a ticket for other topics")
    return Ticket(_decode(match[1]), frozenset(int(t) for t in match[2].split("-")), expires)


def topics_of(ticket: str | None) -> frozenset[int]:
    """The topics a ticket names, read without checking it (``verify`` with them decides whether it admits)."""
    match = SHAPE.fullmatch(ticket) if ticket and len(ticket) <= MAX_CHARS else None
    return frozenset(int(t) for t in match[2].split("-")) if match else frozenset()


def _mac(secret: str, body: str) -> str:
    key = hmac.new(secret.encode(), PURPOSE, hashlib.sha256).digest()
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _topic_list(topics: Iterable[int]) -> str:
    return "-".join(str(topic) for topic in sorted({int(t) for t in topics}))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(encoded: str) -> str:
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):  # signed by this server, so only if the signing changed
        raise TicketRefused("a malformed ticket") from None
