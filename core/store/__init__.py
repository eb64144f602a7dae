"""Storage: ``connect(target)``, the one place a database is opened, and the seam every backend offers.

``connect`` opens a DuckDB file (or ``:memory:``) or, given a ``postgresql://`` URL, a Postgres
database. Both are a ``Database``: the verbs call ``rows``/``one``/``write`` with ``?``
placeholders and never ask which backend they run on. What differs (placeholders, DDL, how a job
row is claimed, how other processes learn of a change) lives in each backend and its ``Dialect``,
as Django's database backends do: ``base`` is the seam, ``duck`` and ``pg`` the backends,
``migrations`` the schema history both apply.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from core.store.base import Database, Dialect, Transaction, is_postgres_url, utcnow
from core.store.duck import open_duckdb
from core.store.pg import open_postgres

__all__ = ["Database", "Dialect", "Transaction", "connect", "is_postgres_url", "utcnow"]


def connect(target: str, clock: Callable[[], datetime] = utcnow) -> Database:
    """Open and migrate the database ``target`` names: a DuckDB file, ``:memory:``, or a ``postgresql://`` URL."""
    if is_postgres_url(target):
        return open_postgres(target, clock)
    return open_duckdb(target, clock)
