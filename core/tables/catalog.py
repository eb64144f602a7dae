"""The app's tables and their columns, from DuckDB's catalog: which exist, how many rows, what each column holds.

Table and column names come from the catalog and are quoted (``core.store.quoting``); a name that is
not in the catalog is refused (NotFound), so no name from input reaches the SQL.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from core.errors import NotFound
from core.store import Database
from core.store.quoting import identifier
from core.tables.reads import read_one, read_rows

MESSAGES = "messages"


BYTES = {"attachment_blobs": "data"}  # tables whose column of file bytes the browser leaves out


def message_view(rows: str = "messages") -> str:
    """SQL for messages with the names of their channel and author; ``m.* EXCLUDE`` keeps columns of later migrations.

    ``rows`` is the messages table or an already narrowed subquery of it (names are then joined to those rows only).
    """
    return (
        "SELECT m.id, m.created_at, c.name AS channel, "
        "CASE WHEN m.author_id IS NULL THEN 'AI' ELSE u.name END AS author, m.* EXCLUDE (id, created_at) "
        f"FROM {rows} m LEFT JOIN channels c ON c.id = m.channel_id LEFT JOIN users u ON u.id = m.author_id"
    )


class TableInfo(NamedTuple):
    name: str
    rows: int


class Column(NamedTuple):
    name: str
    type: str


def table_names(db: Database) -> list[str]:
    """The names of the app's tables (its current database and schema), from the catalog."""
    rows = read_rows(
        db,
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND NOT temporary ORDER BY table_name"
    )
    return [row[0] for row in rows]


def list_tables(db: Database) -> list[TableInfo]:
    """Every table of the app with its exact row count (DuckDB counts a million rows in about a millisecond)."""
    return [TableInfo(name, read_one(db, f"SELECT count(*) FROM {identifier(name)}")[0]) for name in table_names(db)]


def check_table(db: Database, table: Any) -> str:
    """``table`` when the catalog has a table of that name, else NotFound: only catalog names reach the SQL."""
    if table not in table_names(db):
        raise NotFound(f"There is no table named {table!r}.")
    return table


def table_columns(db: Database, table: str) -> list[Column]:
    """The table's columns and types, from the catalog."""
    table = check_table(db, table)
    rows = read_rows(
        db,
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND table_name = ? ORDER BY column_index",
        [table],
    )
    return [Column(*row) for row in rows]


def browse_source(db: Database, table: str) -> str:
    """What the browser reads for ``table``: the messages with names, or the table itself."""
    table = check_table(db, table)
    if table == MESSAGES:
        return f"({message_view()})"
    if table in BYTES:  # a file's bytes are served by /files, never drawn in a grid or put in an export
        return f"(SELECT * EXCLUDE ({identifier(BYTES[table])}) FROM {identifier(table)})"
    return identifier(table)


def browse_columns(db: Database, table: str) -> list[Column]:
    """The columns the browser shows for ``table`` (messages gain channel and author names)."""
    with db.analytics() as cur:
        rows = cur.execute(f"DESCRIBE SELECT * FROM {browse_source(db, table)}").fetchall()
    return [Column(row[0], row[1]) for row in rows]


def column_kinds(columns: list[Column]) -> dict[str, str]:
    """How a page should draw each column: datetime, long_text, status, ms, number, bool or text."""
    kinds = {}
    for name, kind in columns:
        if kind.startswith("TIMESTAMP") or kind == "DATE":
            kinds[name] = "datetime"
        elif name in ("status", "state"):
            kinds[name] = "status"
        elif name.endswith("_ms"):
            kinds[name] = "ms"
        elif kind == "BOOLEAN":
            kinds[name] = "bool"
        elif kind in ("VARCHAR", "JSON") and name in ("content", "context", "persona", "error"):
            kinds[name] = "long_text"
        elif kind in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "HUGEINT", "SMALLINT", "DECIMAL") or kind.startswith("DECIMAL"):
            kinds[name] = "number"
        else:
            kinds[name] = "text"
    return kinds


def status_values(db: Database, table: str) -> list[str]:
    """The distinct values of the table's status (or state) column, for a filter's options."""
    names = {c.name for c in table_columns(db, table)}
    column = "status" if "status" in names else "state" if "state" in names else None
    if column is None:
        return []
    rows = read_rows(db, f"SELECT DISTINCT {identifier(column)} FROM {identifier(table)} WHERE {identifier(column)} IS NOT NULL ORDER BY 1")
    return [row[0] for row in rows]
