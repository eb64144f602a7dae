"""Ids from outside (a link, a widget, a tool call): a whole number naming a row, or a plain sentence."""
from __future__ import annotations

import numbers
from typing import Any

from core.errors import NotFound, ValidationError

MAX_ID = 2**63 - 1  # BIGINT: a larger id cannot name a row


def check_id(value: Any, what: str) -> int:
    """An id as an int, or a plain sentence: a missing or non-whole id is a ValidationError, out of range NotFound."""
    thing = what.lower()
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationError(f"No {thing} was given: a {thing} id is a whole number such as 42.")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"A {thing} id is a whole number such as 42.")
    value = int(value)
    if value > MAX_ID or value < -MAX_ID:  # not even shown: a 5,000-digit number cannot be printed
        raise NotFound(f"There is no {thing} with an id that long.")
    if value <= 0:
        raise NotFound(f"{what} {value} not found.")
    return value
