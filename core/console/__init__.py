"""The SQL console: a query is checked (``guard``), then run in a child process (``sandbox``, ``child``) over a read-only source.

A DuckDB file is read through a snapshot (``snapshot``: the live file is locked by the app's process);
Postgres is attached read-only by the child. This package imports nothing of the app but its errors:
the storage package below the verbs uses ``duckdb_source``. It re-exports the names others use.
"""
from __future__ import annotations

from core.console.guard import SQL_MAX_CHARS, check_readonly_sql
from core.console.sandbox import Answer, ConsoleError, run
from core.console.snapshot import SNAPSHOT_MAX_AGE, duckdb_source

__all__ = ["SNAPSHOT_MAX_AGE", "SQL_MAX_CHARS", "Answer", "ConsoleError", "check_readonly_sql", "duckdb_source", "run"]
