"""Who may use what on the Tables page: the SQL console, exports and private tables are for admins only.

Login mode has roles: admins are the people named in ADMIN_EMAILS. Open mode has none: there the
admin password (ADMIN_PASSWORD) unlocks them, and without one they are open to anyone who can open
the page. Pages ask these functions and draw what they answer.

Wrong passwords back off: after FREE_TRIES wrong ones from one browser session, or from one client address,
each further try waits twice as long as the one before (2 s, 4 s, ... up to MAX_WAIT), and a try during the
wait is refused with a sentence saying when, right password or not. Counted in this process's memory
(``PasswordTries``): each replica counts its own, and a restart forgets.
"""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from core.errors import ChatError
from core.limits import wait_words
from core.store import Database
from core.tables.catalog import TableInfo, list_tables

# identities: people's e-mail addresses and account ids. embedding_jobs: its error column holds what the
# embeddings provider answered (redacted, yet a server's words about its keys and quota): admins only.
# attachment_blobs: the bytes of every file sent, whatever channel it was sent in (the grid shows hashes and sizes).
# message_revisions: the texts people replaced (a typo, or something they wished unsaid): admins only.
PRIVATE_TABLES = frozenset({"identities", "embedding_jobs", "attachment_blobs", "message_revisions"})
FREE_TRIES = 5  # wrong passwords before any wait: typos, caps lock, a password manager's old entry
MAX_WAIT = 3600.0  # seconds: the longest wait, so a forgetful admin is never locked out for days
KEPT = 10_000  # sessions and clients remembered at most; the idle are forgotten first


class TooManyTries(ChatError):
    """A password try refused because too many wrong ones came before it; ``wait`` is in seconds."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass
class _Record:
    failures: int = 0
    until: float = 0.0  # clock time before which no try is taken
    last_wrong: bytes = b""  # digest of the last wrong password: the page re-checks it on every rerun
    seen: float = 0.0


class PasswordTries:
    """Wrong admin-password tries per browser session and per client address, with a clock (tests pass one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._records: dict[Hashable, _Record] = {}
        self._lock = threading.Lock()

    def check(self, given: Any, expected: str, session: Hashable | None, client: Hashable | None) -> bool:
        """Whether ``given`` is the password; TooManyTries while this session or client must wait."""
        now = self.clock()
        keys = [key for key in (("session", session), ("client", client)) if key[1] is not None]
        with self._lock:
            records = [self._records.setdefault(key, _Record()) for key in keys]
            for record in records:
                record.seen = now
            wait = max((record.until - now for record in records), default=0.0)
            if wait > 0:
                raise TooManyTries(f"Too many wrong admin passwords. Try again in {wait_words(wait)}.", wait)
            if password_ok(given, expected):
                for record in records:
                    record.failures, record.until = 0, 0.0
                return True
            digest = hashlib.sha256(str(given).encode("utf-8", "replace")).digest()
            if session is not None and records[0].last_wrong == digest:
                return False  # the same wrong password on a rerun of the page: not a new try
            for record in records:
                record.failures += 1
                record.last_wrong = digest
                if record.failures >= FREE_TRIES:
                    record.until = now + min(MAX_WAIT, 2.0 ** (record.failures - FREE_TRIES + 1))
            self._forget_idle()
            return False

    def _forget_idle(self) -> None:
        if len(self._records) > KEPT:
            for key, _ in sorted(self._records.items(), key=lambda item: item[1].seen)[: len(self._records) - KEPT]:
                del self._records[key]


TRIES = PasswordTries()  # this process's count


def password_ok(given: Any, expected: str | None) -> bool:
    """Whether ``given`` matches the admin password (constant-time); always True when none is set."""
    if not expected:
        return True
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def asks_password(login: bool, admin_password: str | None) -> bool:
    """Whether the page must ask for the admin password: open mode with ADMIN_PASSWORD set (login mode has roles)."""
    return not login and bool(admin_password)


def admin_unlocked(
    *, login: bool, admin: bool, admin_password: str | None, given: Any = None, session: Hashable | None = None,
    client: Hashable | None = None, tries: PasswordTries | None = None,
) -> bool:
    """Whether the console, exports and private tables are open to this visitor.

    Login mode: only to an admin (``admin``: named in ADMIN_EMAILS), whatever password is given.
    Open mode: to anyone when no ADMIN_PASSWORD is set, else to whoever gave it (``given``). A password
    given with the browser ``session``'s id and/or the ``client``'s address is counted (``tries``, by
    default this process's TRIES): too many wrong ones raise TooManyTries, saying when to try again.
    """
    if login:
        return bool(admin)
    if not admin_password or given is None or given == "" or (session is None and client is None):
        return password_ok(given, admin_password)
    return (tries or TRIES).check(given, admin_password, session, client)


def offers_console(login: bool, unlocked: bool) -> bool:
    """Whether the page offers the SQL console at all: in login mode only to those it is open to."""
    return unlocked or not login


def may_see(table: str, unlocked: bool) -> bool:
    """Whether a visitor may browse ``table``: a private table only when unlocked."""
    return unlocked or table not in PRIVATE_TABLES


def visible_tables(db: Database, unlocked: bool) -> list[TableInfo]:
    """The tables a visitor may browse, each with its row count."""
    return [info for info in list_tables(db) if may_see(info.name, unlocked)]
