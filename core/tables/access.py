"""Who may use what on the Tables page: the SQL console, exports and private tables are for admins only.

Login mode has roles: admins are the people named in ADMIN_EMAILS. Open mode has none: there the
admin password (ADMIN_PASSWORD) unlocks them, and without one they are open to anyone who can open
the page. Pages ask these functions and draw what they answer.
"""
from __future__ import annotations

import hmac
from typing import Any

from core.store import Database
from core.tables.catalog import TableInfo, list_tables

PRIVATE_TABLES = frozenset({"identities"})  # people's e-mail addresses and account ids: admins only


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


def admin_unlocked(*, login: bool, admin: bool, admin_password: str | None, given: Any = None) -> bool:
    """Whether the console, exports and private tables are open to this visitor.

    Login mode: only to an admin (``admin``: named in ADMIN_EMAILS), whatever password is given.
    Open mode: to anyone when no ADMIN_PASSWORD is set, else to whoever gave it (``given``).
    """
    if login:
        return bool(admin)
    return password_ok(given, admin_password)


def offers_console(login: bool, unlocked: bool) -> bool:
    """Whether the page offers the SQL console at all: in login mode only to those it is open to."""
    return unlocked or not login


def may_see(table: str, unlocked: bool) -> bool:
    """Whether a visitor may browse ``table``: a private table only when unlocked."""
    return unlocked or table not in PRIVATE_TABLES


def visible_tables(db: Database, unlocked: bool) -> list[TableInfo]:
    """The tables a visitor may browse, each with its row count."""
    return [info for info in list_tables(db) if may_see(info.name, unlocked)]
