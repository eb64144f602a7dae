"""The SQL console's guard: one read-only SELECT over the app's own tables, or a sentence saying why not.

DuckDB parses the text (``extract_statements``, ``json_serialize_sql``); what is refused: more than one
statement, anything but SELECT, table functions outside an allow-list (file readers above all),
functions that change state a rollback does not undo, and file paths used as tables.
"""
from __future__ import annotations

import json
import re
from typing import Any

import duckdb

from core.errors import ValidationError

SQL_MAX_CHARS = 20_000  # a console query longer than this is a paste accident

# Table functions the console may call: they read only the database and its catalog, or make values.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
        "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
        "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences", "duckdb_settings",
        "duckdb_tables", "duckdb_types", "duckdb_views", "pragma_database_size", "pragma_storage_info",
        "pragma_table_info", "pragma_version",
    }
)
# Scalar functions that change state even inside a transaction that is rolled back.
UNSAFE_FUNCTIONS = {
    "nextval": "it advances a sequence, which a rollback does not undo",
    "write_log": "it writes to DuckDB's log",
}
FILE_FUNCTION_HINTS = ("read_", "_scan", "glob", "sniff_", "parquet_", "iceberg", "delta")  # names of file readers
STATEMENT_REASONS = {
    "INSERT": "change data", "UPDATE": "change data", "DELETE": "change data", "MERGE_INTO": "change data",
    "CREATE": "change the schema", "CREATE_FUNC": "change the schema", "DROP": "change the schema",
    "ALTER": "change the schema", "ATTACH": "open other databases", "DETACH": "close databases",
    "COPY": "read or write files", "COPY_DATABASE": "read or write files", "EXPORT": "write files",
    "LOAD": "install or load extensions", "PRAGMA": "change settings", "SET": "change settings",
    "VARIABLE_SET": "change settings", "TRANSACTION": "control transactions", "CALL": "run procedures",
    "VACUUM": "maintain storage", "ANALYZE": "maintain storage", "EXPLAIN": "are not needed here (EXPLAIN ANALYZE runs its statement)",
    "PREPARE": "prepare statements", "EXECUTE": "run prepared statements",
}
# Where the typed keyword says more than DuckDB's statement type.
KEYWORD_REASONS = {"CHECKPOINT": "maintain storage", "INSTALL": "install extensions", "USE": "change settings",
                   "RESET": "change settings", "IMPORT": "read files", "BEGIN": "control transactions"}
LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _nodes(tree: Any):
    """Every dict in a json_serialize_sql tree."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_tree(tree: dict) -> None:
    """Refuse table functions outside SAFE_TABLE_FUNCTIONS, unsafe functions and file paths used as tables."""
    for node in _nodes(tree):
        if node.get("type") == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name in SAFE_TABLE_FUNCTIONS:
                continue
            if any(hint in name for hint in FILE_FUNCTION_HINTS):
                raise ValidationError(
                    f"{name}() reads files outside the database; the console only queries the app's own tables."
                )
            raise ValidationError(
                f"The table function {name}() is not allowed in the console. Allowed: {', '.join(sorted(SAFE_TABLE_FUNCTIONS))}."
            )
        if node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in UNSAFE_FUNCTIONS:
                raise ValidationError(f"{name}() is not allowed in the console: {UNSAFE_FUNCTIONS[name]}.")
        if node.get("type") == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if any(mark in name for mark in "./\\:"):
                raise ValidationError(
                    f"{name!r} looks like a file; the console only queries the app's own tables."
                )


def check_readonly_sql(duck: duckdb.DuckDBPyConnection, sql: Any) -> str:
    """The one SELECT statement in ``sql``, or a ValidationError saying why it cannot run; ``duck`` parses it."""
    if not isinstance(sql, str) or not sql.strip():
        raise ValidationError("Enter a SELECT query.")
    if len(sql) > SQL_MAX_CHARS:
        raise ValidationError(f"The query is too long: {len(sql):,} characters; the limit is {SQL_MAX_CHARS:,}.")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise ValidationError(_first_line(error)) from None
    if len(statements) != 1:
        raise ValidationError(f"Run one statement at a time; this text holds {len(statements)}.")
    statement = statements[0]
    text = statement.query.strip()
    # DuckDB rewrites a read-only PRAGMA into a SELECT: look at what was typed.
    keyword = (LEADING_COMMENTS.sub("", sql).split(None, 1) or ["?"])[0].upper().rstrip(";")
    if keyword == "PRAGMA":
        raise ValidationError(
            "Only SELECT queries run in the console: PRAGMA statements can change settings. "
            "To read table details use SELECT * FROM pragma_table_info('messages')."
        )
    if statement.type != duckdb.StatementType.SELECT:
        if keyword in KEYWORD_REASONS:
            kind, reason = keyword, KEYWORD_REASONS[keyword]
        elif not statement.type.name.replace("_", "").isalpha():  # a type DuckDB has no name for: "???"
            raise ValidationError(f"Only SELECT queries run in the console, and a statement that starts with "
                                  f"{keyword[:40]} is not one.")
        else:
            kind = statement.type.name.replace("_INTO", "").replace("_", " ")
            reason = STATEMENT_REASONS.get(statement.type.name, "are not read-only")
        raise ValidationError(f"Only SELECT queries run in the console: {kind} statements {reason}.")
    serialized = duck.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0]
    tree = json.loads(serialized)
    if tree.get("error"):
        raise ValidationError(f"Only plain SELECT queries run in the console ({tree.get('error_message', 'unsupported')}).")
    _check_tree(tree)
    return text
