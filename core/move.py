"""Copy a Channel Chat DuckDB file into an empty Postgres database: ``python -m core.move FILE URL``.

Both sides are migrated to the current schema first; then DuckDB attaches both and copies each
table in one statement, all in one transaction, with ids kept; Postgres's identity sequences are
then moved past the largest id so new rows get fresh ids. A target that holds any row is refused.
Stop the app first: a running app holds the DuckDB file.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import duckdb
import psycopg
from psycopg import sql

from core.errors import ChatError, ValidationError
from core.store import is_postgres_url
from core.store.duck import open_duckdb
from core.store.pg import describe_url, extension_directory, open_postgres, unreachable
from core.store.quoting import identifier, literal

SKIPPED = {"migrations"}  # each side keeps its own record of the migrations applied to it
PLAIN_SEQUENCES = {"message_vectors_seq": ("message_vectors", "seq")}  # sequences no identity column owns


@dataclass(frozen=True)
class Moved:
    table: str
    rows: int


def _columns(con: duckdb.DuckDBPyConnection, database: str, schema: str, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [database, schema, table],
    ).fetchall()
    return [row[0] for row in rows]


def _tables(con: duckdb.DuckDBPyConnection, database: str, schema: str) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? ORDER BY table_name",
        [database, schema],
    ).fetchall()
    return [row[0] for row in rows]


def move(source: str, target: str) -> list[Moved]:
    """Copy every table of the DuckDB file ``source`` into the empty Postgres database ``target``."""
    if not is_postgres_url(target):
        raise ValidationError("The target must be a postgresql:// URL.")
    if is_postgres_url(source) or source == ":memory:":
        raise ValidationError("The source must be a DuckDB file.")
    open_duckdb(source).close()  # migrate the file to the schema the target gets
    open_postgres(target).close()
    con = duckdb.connect(
        config={"extension_directory": extension_directory(), "autoinstall_known_extensions": False,
                "autoload_known_extensions": False}
    )
    try:
        con.execute("LOAD postgres_scanner")
        con.execute(f"ATTACH {literal(source)} AS src (READ_ONLY)")
        try:
            con.execute(f"ATTACH {literal(target)} AS dst (TYPE postgres)")
        except duckdb.Error as error:
            raise unreachable(target, error) from None
        tables = [t for t in _tables(con, "src", "main") if t not in SKIPPED and t in _tables(con, "dst", "public")]
        for table in tables:
            (count,) = con.execute(f"SELECT count(*) FROM dst.public.{identifier(table)}").fetchone()
            if count:
                raise ValidationError(
                    f"The target {describe_url(target)} is not empty: its table {table} has {count:,} rows. "
                    "Move into an empty database."
                )
        moved = []
        con.execute("BEGIN")
        for table in tables:
            shared = [c for c in _columns(con, "src", "main", table) if c in _columns(con, "dst", "public", table)]
            names = ", ".join(identifier(c) for c in shared)
            con.execute(f"INSERT INTO dst.public.{identifier(table)} ({names}) SELECT {names} FROM src.main.{identifier(table)}")
            (count,) = con.execute(f"SELECT count(*) FROM src.main.{identifier(table)}").fetchone()
            moved.append(Moved(table, count))
        con.execute("COMMIT")
    finally:
        con.close()
    _advance_identities(target, [m.table for m in moved])
    return moved


def _advance_identities(url: str, tables: list[str]) -> None:
    """Move each identity sequence past the largest copied id, so new rows never reuse one."""
    with psycopg.connect(url, autocommit=True) as conn:
        for sequence, (table, column) in PLAIN_SEQUENCES.items():
            if table in tables:
                conn.execute(
                    sql.SQL("SELECT setval(%s, coalesce((SELECT max({}) FROM {}), 0) + 1, false)").format(
                        sql.Identifier(column), sql.Identifier(table)
                    ),
                    [sequence],
                )
        for table in tables:
            has_id = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s "
                "AND column_name = 'id'", [table]).fetchone()
            if not has_id:
                continue  # e.g. identities, keyed by issuer and subject
            sequence = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table]).fetchone()
            if sequence and sequence[0]:
                conn.execute(
                    sql.SQL("SELECT setval(%s, coalesce((SELECT max(id) FROM {}), 0) + 1, false)").format(
                        sql.Identifier(table)
                    ),
                    [sequence[0]],
                )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m core.move data/chat.duckdb postgresql://user:password@host/database", file=sys.stderr)
        return 2
    source, target = argv
    try:
        moved = move(source, target)
    except ChatError as error:
        print(f"Nothing was moved: {error}", file=sys.stderr)
        return 1
    for item in moved:
        print(f"{item.table}: {item.rows:,} rows")
    print(f"Moved {source} into {describe_url(target)}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
