"""Tickets for the live route: signed for one person and a set of topics, until a time, and nothing else."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import tickets
from core.tickets import Ticket, TicketRefused, expiry, sign, verify

SECRET = "cookie-secret-never-shown"
NOW = 1_767_225_600  # 2026-01-01 00:00 UTC
SUBJECT = "https://accounts.example.com 1234567890"
TICKET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."  # what a ticket is made of


def test_a_ticket_admits_its_subject_to_its_topics_until_it_expires():
    ticket = sign(SECRET, SUBJECT, [5, 0], expiry(NOW))
    assert verify(SECRET, ticket, [0, 5], NOW) == Ticket(SUBJECT, frozenset({0, 5}), expiry(NOW))
    assert verify(SECRET, ticket, [5, 0, 5], expiry(NOW) - 1).subject == SUBJECT  # order and repeats do not matter
    with pytest.raises(TicketRefused, match="expired"):
        verify(SECRET, ticket, [0, 5], expiry(NOW))


def test_expiry_lasts_a_few_minutes_on_whole_minutes():
    assert expiry(NOW) == NOW + tickets.TICKET_SECONDS
    assert expiry(NOW + 1) == expiry(NOW + 59) == NOW + tickets.TICKET_SECONDS + 60  # one ticket for the minute
    assert sign(SECRET, SUBJECT, [0], expiry(NOW + 1)) == sign(SECRET, SUBJECT, [0], expiry(NOW + 59))


def test_a_ticket_is_plain_url_text_without_the_secret():
    ticket = sign(SECRET, "iss sub/with?odd&chars=é", [3, 0], expiry(NOW))
    assert set(ticket) <= set(TICKET_CHARS)
    assert SECRET not in ticket
    assert verify(SECRET, ticket, [0, 3], NOW).subject == "iss sub/with?odd&chars=é"


@pytest.mark.parametrize("ticket, why", [
    (None, "no ticket"), ("", "no ticket"), ("x", "malformed"), ("a.b.c.d", "malformed"),
    ("A" * 5000, "malformed"),
])
def test_what_is_not_a_ticket_is_refused(ticket, why):
    with pytest.raises(TicketRefused, match=why):
        verify(SECRET, ticket, [0], NOW)


def test_a_ticket_for_other_topics_is_refused():
    ticket = sign(SECRET, SUBJECT, [3], expiry(NOW))
    for asked in ([4], [3, 0], [0]):
        with pytest.raises(TicketRefused, match="other topics"):
            verify(SECRET, ticket, asked, NOW)


def test_a_ticket_signed_with_another_secret_is_refused():
    with pytest.raises(TicketRefused, match="did not sign"):
        verify(SECRET, sign("another secret", SUBJECT, [0], expiry(NOW)), [0], NOW)


def test_an_empty_secret_admits_nothing():
    with pytest.raises(ValueError):
        sign("", SUBJECT, [0], expiry(NOW))
    forged = tickets._b64(SUBJECT.encode()) + f".0.{expiry(NOW)}." + "A" * 43
    with pytest.raises(TicketRefused, match="no secret"):
        verify("", forged, [0], NOW)


def test_a_ticket_that_lasts_too_long_is_refused():
    ticket = sign(SECRET, SUBJECT, [0], NOW + 24 * 3600)  # only a leaked secret could make one
    with pytest.raises(TicketRefused, match="longer"):
        verify(SECRET, ticket, [0], NOW)


@given(st.integers(min_value=0, max_value=200), st.sampled_from(TICKET_CHARS))
def test_changing_any_character_of_a_ticket_refuses_it(position, replacement):
    ticket = sign(SECRET, SUBJECT, [0, 7], expiry(NOW))
    position %= len(ticket)
    changed = ticket[:position] + replacement + ticket[position + 1:]
    if changed == ticket:
        return
    with pytest.raises(TicketRefused):
        verify(SECRET, changed, [0, 7], NOW)
