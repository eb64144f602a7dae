"""Quoting for DuckDB SQL: the one place a name or a text that cannot be bound becomes part of a statement.

Values are bound with ``?`` everywhere; only what SQL cannot bind comes here: identifiers (table and
column names, always taken from the catalog, never from input) and the string an ``ATTACH`` takes.
Postgres statements composed in Python use the driver's own ``psycopg.sql.Identifier`` instead.
"""
from __future__ import annotations


def identifier(name: str) -> str:
    """``name`` as a DuckDB identifier: double-quoted, its double quotes doubled, so any name reads back as itself."""
    if "\x00" in name:
        raise ValueError("An SQL identifier cannot hold a NUL character.")
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a DuckDB string literal, its single quotes doubled (for statements that take no parameter, as ATTACH)."""
    if "\x00" in text:
        raise ValueError("An SQL string literal cannot hold a NUL character.")
    return "'" + text.replace("'", "''") + "'"
