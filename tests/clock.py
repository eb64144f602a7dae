"""A clock the tests move by hand, passed where the code takes ``clock=`` (naive UTC, as the database stores it)."""
from __future__ import annotations

from datetime import datetime


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
