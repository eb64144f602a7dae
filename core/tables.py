"""Inspect the app's own tables: browse, overview charts, exports and a read-only SQL console.

Table and column names come from DuckDB's catalog and are quoted; every value is bound with ``?``.
"""
from __future__ import annotations

import hmac
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import duckdb
import pandas as pd
import pyarrow as pa

from core import console
from core.errors import NotFound, ValidationError
from core.limits import ASKS
from core.store import Database

PAGE_SIZES = (25, 50, 100, 250)  # rows per page: a page is one LIMIT/OFFSET query, never the whole table
DEFAULT_PAGE_SIZE = 50
TEXT_PREVIEW_CHARS = 300  # a cell shows this much of a long text (messages go up to 1 MB); exports carry it all
EXPORT_MAX_ROWS = 100_000  # ~100 MB of CSV at 1 KB a message: about what a browser download holds comfortably
CONSOLE_MAX_ROWS = 1000  # rows the console shows; more would only slow the page
CONSOLE_TIMEOUT_S = 5.0  # seconds before a console query is stopped: the page should not hang
CONSOLE_MEMORY_MB = 256  # memory a console query may use on top of its process's own (~90 MB): app + console fit in 1 GB
CONSOLE_EXAMPLE = (
    "SELECT c.name AS channel, count(*) AS messages, max(m.created_at) AS last_message\n"
    "FROM messages m JOIN channels c ON c.id = m.channel_id\nGROUP BY ALL ORDER BY messages DESC"
)
SQL_MAX_CHARS = 20_000  # a console query longer than this is a paste accident
AI_AUTHOR = 0  # ids start at 1, so author 0 selects the AI's messages (author_id IS NULL)
MESSAGES = "messages"
PRIVATE_TABLES = frozenset({"identities"})  # people's e-mail addresses and account ids: admins only
BUCKETS = ("hour", "day")
TIME_RANGES: dict[str, timedelta | None] = {
    "All time": None,
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}
# The JSON sent to the model repeats earlier messages: searching it would match every reply after a hit.
TEXT_SEARCH_SKIP = frozenset({"context"})
ERROR_REASON_CHARS = 80  # reasons are grouped on their start: the tail often carries ids or timings



def message_view(rows: str = "messages") -> str:
    """SQL for messages with the names of their channel and author; ``m.* EXCLUDE`` keeps columns of later migrations.

    ``rows`` is the messages table or an already narrowed subquery of it (names are then joined to those rows only).
    """
    return (
        "SELECT m.id, m.created_at, c.name AS channel, "
        "CASE WHEN m.author_id IS NULL THEN 'AI' ELSE u.name END AS author, m.* EXCLUDE (id, created_at) "
        f"FROM {rows} m LEFT JOIN channels c ON c.id = m.channel_id LEFT JOIN users u ON u.id = m.author_id"
    )


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

NULLABLE_INTS = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
}


class TableInfo(NamedTuple):
    name: str
    rows: int


class Column(NamedTuple):
    name: str
    type: str


@dataclass(frozen=True)
class Filters:
    """What the browser narrows a table to; each filter applies only where the table has its column."""

    channel_id: int | None = None  # column channel_id
    author_id: int | None = None  # column author_id; AI_AUTHOR for the AI's messages
    status: str | None = None  # column status (messages) or state (ai_jobs)
    since: datetime | None = None  # column created_at, naive UTC, inclusive
    until: datetime | None = None  # column created_at, exclusive
    text: str | None = None  # case-insensitive substring of any text column


@dataclass(frozen=True)
class Sort:
    column: str
    descending: bool = True


def _frame(result: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """A query's rows as a DataFrame; integer columns with NULLs stay integers (pandas would make them floats)."""
    return _to_pandas(result.to_arrow_table())


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=NULLABLE_INTS.get)


def _rows(db: Database, sql: str, params: list[Any] | tuple = ()) -> list[tuple]:
    """DuckDB SQL over the app's tables (on Postgres through DuckDB's read-only attachment)."""
    with db.analytics() as cur:
        return cur.execute(sql, list(params)).fetchall()


def _one(db: Database, sql: str, params: list[Any] | tuple = ()) -> tuple | None:
    with db.analytics() as cur:
        return cur.execute(sql, list(params)).fetchone()


def quote(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


# catalog ---------------------------------------------------------------------
def _table_names(db: Database) -> list[str]:
    rows = _rows(
        db,
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND NOT temporary ORDER BY table_name"
    )
    return [row[0] for row in rows]


def list_tables(db: Database) -> list[TableInfo]:
    """Every table of the app with its exact row count (DuckDB counts a million rows in about a millisecond)."""
    return [TableInfo(name, _one(db, f"SELECT count(*) FROM {quote(name)}")[0]) for name in _table_names(db)]


def _check_table(db: Database, table: Any) -> str:
    if table not in _table_names(db):
        raise NotFound(f"There is no table named {table!r}.")
    return table


def table_columns(db: Database, table: str) -> list[Column]:
    """The table's columns and types, from the catalog."""
    table = _check_table(db, table)
    rows = _rows(
        db,
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND table_name = ? ORDER BY column_index",
        [table],
    )
    return [Column(*row) for row in rows]


def _source(db: Database, table: str) -> str:
    """What the browser reads for ``table``: the messages with names, or the table itself."""
    table = _check_table(db, table)
    return f"({message_view()})" if table == MESSAGES else quote(table)


def browse_columns(db: Database, table: str) -> list[Column]:
    """The columns the browser shows for ``table`` (messages gain channel and author names)."""
    with db.analytics() as cur:
        rows = cur.execute(f"DESCRIBE SELECT * FROM {_source(db, table)}").fetchall()
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


def filter_support(db: Database, table: str) -> set[str]:
    """Names of the Filters fields that apply to ``table``."""
    names = {c.name for c in browse_columns(db, table)}
    support = {"text"}
    if "channel_id" in names:
        support.add("channel_id")
    if "author_id" in names:
        support.add("author_id")
    if "status" in names or "state" in names:
        support.add("status")
    if "created_at" in names:
        support.update({"since", "until"})
    return support


def status_values(db: Database, table: str) -> list[str]:
    """The distinct values of the table's status (or state) column, for a filter's options."""
    names = {c.name for c in table_columns(db, table)}
    column = "status" if "status" in names else "state" if "state" in names else None
    if column is None:
        return []
    rows = _rows(db, f"SELECT DISTINCT {quote(column)} FROM {quote(table)} WHERE {quote(column)} IS NOT NULL ORDER BY 1")
    return [row[0] for row in rows]


def since_for(label: str, now: datetime) -> datetime | None:
    """The start of a named time range (TIME_RANGES) ending ``now``."""
    if label not in TIME_RANGES:
        raise ValidationError(f"Time range must be one of {', '.join(TIME_RANGES)}, not {label!r}.")
    span = TIME_RANGES[label]
    return None if span is None else now - span


# browsing --------------------------------------------------------------------
def _where(columns: list[Column], filters: Filters) -> tuple[str, list[Any]]:
    names = {c.name for c in columns}
    clauses: list[str] = []
    params: list[Any] = []
    if filters.channel_id is not None and "channel_id" in names:
        clauses.append("channel_id = ?")
        params.append(filters.channel_id)
    if filters.author_id is not None and "author_id" in names:
        if filters.author_id == AI_AUTHOR:
            clauses.append("author_id IS NULL")
        else:
            clauses.append("author_id = ?")
            params.append(filters.author_id)
    if filters.status:
        column = "status" if "status" in names else "state" if "state" in names else None
        if column:
            clauses.append(f"{quote(column)} = ?")
            params.append(filters.status)
    if "created_at" in names:
        if filters.since is not None:
            clauses.append("created_at >= ?")
            params.append(filters.since)
        if filters.until is not None:
            clauses.append("created_at < ?")
            params.append(filters.until)
    text = (filters.text or "").strip()
    if text:
        searched = [c.name for c in columns if c.type == "VARCHAR" and c.name not in TEXT_SEARCH_SKIP]
        if searched:
            clauses.append("(" + " OR ".join(f"contains(lower({quote(n)}), ?)" for n in searched) + ")")
            params.extend([text.lower()] * len(searched))
        else:
            clauses.append("false")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _order(columns: list[Column], sort: Sort | None) -> str:
    names = [c.name for c in columns]
    if sort is None:
        sort = Sort("id" if "id" in names else names[0], True)
    if sort.column not in names:
        raise ValidationError(f"Cannot sort by {sort.column!r}: the columns are {', '.join(names)}.")
    direction = "DESC" if sort.descending else "ASC"
    order = f"{quote(sort.column)} {direction} NULLS LAST"
    if sort.column != "id" and "id" in names:
        order += f", id {direction}"  # a tie-breaker keeps paging stable
    return order


@dataclass(frozen=True)
class _Query:
    """The SQL behind a browser view: its count, and its rows in order (with LIMIT and OFFSET marks)."""

    count: str
    rows: str
    params: list[Any]


def _plan(db: Database, table: str, filters: Filters, sort: Sort | None, preview: bool) -> _Query:
    columns = browse_columns(db, table)
    order = _order(columns, sort)
    shown = ", ".join(
        f"left({quote(c.name)}, {TEXT_PREVIEW_CHARS}) AS {quote(c.name)}" if preview and c.type == "VARCHAR"
        else quote(c.name)
        for c in columns
    )
    base = table_columns(db, table)
    if table == MESSAGES and not (filters.text or "").strip() and (sort is None or sort.column in {c.name for c in base}):
        # Filter, sort and cut the bare table, then join names to the rows kept: a page of a million
        # messages costs milliseconds instead of a join over all of them.
        where, params = _where(base, filters)
        rows = f"(SELECT * FROM messages{where} ORDER BY {order} LIMIT ? OFFSET ?)"
        return _Query(f"SELECT count(*) FROM messages{where}", f"SELECT {shown} FROM ({message_view(rows)}) ORDER BY {order}", params)
    where, params = _where(columns, filters)
    source = _source(db, table)
    rows = f"SELECT {shown} FROM (SELECT * FROM {source} AS s{where} ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
    return _Query(f"SELECT count(*) FROM {source} AS s{where}", rows, params)


def count_rows(db: Database, table: str, filters: Filters = Filters()) -> int:
    """How many rows of ``table`` pass ``filters``."""
    query = _plan(db, table, filters, None, preview=True)
    return _one(db, query.count, query.params)[0]


def page_count(total: int, page_size: int) -> int:
    """Pages needed for ``total`` rows (at least one, so an empty table still has page 1)."""
    return max(1, math.ceil(total / page_size))


def browse(
    db: Database,
    table: str,
    filters: Filters = Filters(),
    sort: Sort | None = None,
    page: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> tuple[pd.DataFrame, int]:
    """One page of ``table`` (long texts cut to TEXT_PREVIEW_CHARS) and the number of rows that pass the filters."""
    if page_size not in PAGE_SIZES:
        raise ValidationError(f"Page size must be one of {', '.join(map(str, PAGE_SIZES))}, not {page_size!r}.")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValidationError(f"Page must be a whole number from 1, not {page!r}.")
    query = _plan(db, table, filters, sort, preview=True)
    with db.analytics() as cur:
        total = cur.execute(query.count, query.params).fetchone()[0]
        frame = _frame(cur.execute(query.rows, [*query.params, page_size, (page - 1) * page_size]))
    return frame, total


# export ------------------------------------------------------------------------
def export_frame(
    db: Database, table: str, filters: Filters = Filters(), sort: Sort | None = None, limit: int = EXPORT_MAX_ROWS
) -> tuple[pd.DataFrame, bool]:
    """The filtered rows with full texts, at most ``limit`` of them, and whether the limit cut them."""
    query = _plan(db, table, filters, sort, preview=False)
    with db.analytics() as cur:
        frame = _frame(cur.execute(query.rows, [*query.params, limit + 1, 0]))
    capped = len(frame) > limit
    return (frame.iloc[:limit] if capped else frame), capped


def to_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes (UTF-8, header row, no index)."""
    return frame.to_csv(index=False).encode("utf-8")


def to_parquet(frame: pd.DataFrame) -> bytes:
    """Parquet bytes written by pyarrow."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def export_csv(db: Database, table: str, filters: Filters = Filters(), sort: Sort | None = None) -> bytes:
    """The filtered view as CSV, capped at EXPORT_MAX_ROWS rows."""
    return to_csv(export_frame(db, table, filters, sort)[0])


def export_parquet(db: Database, table: str, filters: Filters = Filters(), sort: Sort | None = None) -> bytes:
    """The filtered view as Parquet, capped at EXPORT_MAX_ROWS rows."""
    return to_parquet(export_frame(db, table, filters, sort)[0])


# overview --------------------------------------------------------------------
def _bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise ValidationError(f"Bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}.")
    return bucket


def _since_clause(since: datetime | None, column: str = "m.created_at") -> tuple[str, list[Any]]:
    return ("", []) if since is None else (f" AND {column} >= ?", [since])


def overview_totals(db: Database, since: datetime | None = None) -> dict[str, Any]:
    """Headline numbers: messages, AI replies, errors and the error rate, users, channels."""
    clause, params = _since_clause(since)
    messages, ai, errors = _one(
        db,
        "SELECT count(*), count(*) FILTER (m.author_id IS NULL), count(*) FILTER (m.status = 'error') "
        f"FROM messages m WHERE true{clause}",
        params,
    )
    users = _one(db, "SELECT count(*) FROM users")[0]
    channels = _one(db, "SELECT count(*) FROM channels")[0]
    rate = errors / ai if ai else 0.0
    return {"messages": messages, "ai_replies": ai, "errors": errors, "error_rate": rate, "users": users, "channels": channels}


def messages_over_time(db: Database, bucket: str = "day", since: datetime | None = None) -> pd.DataFrame:
    """Messages per channel per hour or day: one row per bucket, one column per channel."""
    clause, params = _since_clause(since)
    with db.analytics() as cur:
        long = cur.execute(
            "SELECT date_trunc(?, m.created_at) AS bucket, coalesce(c.name, '#' || m.channel_id) AS channel, "
            "count(*) AS messages FROM messages m LEFT JOIN channels c ON c.id = m.channel_id "
            f"WHERE true{clause} GROUP BY ALL ORDER BY bucket",
            [_bucket(bucket), *params],
        ).df()
    if long.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="bucket"))
    wide = long.pivot_table(index="bucket", columns="channel", values="messages", aggfunc="sum", fill_value=0)
    wide.columns.name = None
    return wide


def ai_timings(db: Database, bucket: str = "day", since: datetime | None = None) -> pd.DataFrame:
    """AI time to first token and total time (median and 95th percentile, ms) per hour or day."""
    clause, params = _since_clause(since)
    with db.analytics() as cur:
        frame = cur.execute(
            "SELECT date_trunc(?, m.created_at) AS bucket, "
            "quantile_cont(m.ttft_ms, 0.5) AS \"first token p50\", quantile_cont(m.ttft_ms, 0.95) AS \"first token p95\", "
            "quantile_cont(m.total_ms, 0.5) AS \"total p50\", quantile_cont(m.total_ms, 0.95) AS \"total p95\" "
            "FROM messages m WHERE m.author_id IS NULL AND (m.ttft_ms IS NOT NULL OR m.total_ms IS NOT NULL)"
            f"{clause} GROUP BY ALL ORDER BY bucket",
            [_bucket(bucket), *params],
        ).df()
    return frame.set_index("bucket")


def error_reasons(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """AI errors by reason: how many, and their share (%) of all AI replies, most frequent first."""
    clause, params = _since_clause(since)
    with db.analytics() as cur:
        frame = cur.execute(
            f"WITH ai AS (SELECT m.status, m.error FROM messages m WHERE m.author_id IS NULL{clause}) "
            f"SELECT left(coalesce(error, 'unknown'), {ERROR_REASON_CHARS}) AS reason, count(*) AS errors, "
            '100.0 * count(*) / (SELECT count(*) FROM ai) AS "error rate %" '
            "FROM ai WHERE status = 'error' GROUP BY ALL ORDER BY errors DESC, reason LIMIT 20",
            params,
        ).df()
    return frame.set_index("reason")


def tokens_per_day(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """Prompt and completion tokens of every request to a model per day, from the usage ledger (what the budget counts)."""
    clause, params = _since_clause(since, "created_at")
    with db.analytics() as cur:
        frame = cur.execute(
            "SELECT date_trunc('day', created_at) AS day, CAST(sum(prompt_tokens) AS BIGINT) AS prompt, "
            f"CAST(sum(completion_tokens) AS BIGINT) AS completion FROM ai_usage WHERE true{clause} "
            "GROUP BY ALL ORDER BY day",
            params,
        ).df()
    return frame.set_index("day")


def usage_by_person(db: Database, since: datetime | None = None) -> pd.DataFrame:
    """Per person: messages sent, AI replies asked for (sends and Retries), and the tokens they caused, most first.

    Tokens come from the usage ledger (core.usage): what the daily budget counts, by the time of each request.
    """
    sent_since, sent_params = _since_clause(since, "created_at")
    asked_since, asked_params = _since_clause(since, "created_at")
    used_since, used_params = _since_clause(since, "created_at")
    marks = ", ".join("?" for _ in ASKS)
    with db.analytics() as cur:
        frame = cur.execute(
            f"WITH sent AS (SELECT author_id, count(*) AS messages, max(created_at) AS last_message FROM messages "
            f"WHERE author_id IS NOT NULL{sent_since} GROUP BY author_id), "
            f"asked AS (SELECT requested_by AS user_id, count(*) AS ai_replies FROM ai_jobs "
            f"WHERE cause IN ({marks}){asked_since} GROUP BY requested_by), "
            "used AS (SELECT user_id, CAST(sum(prompt_tokens + completion_tokens) AS BIGINT) AS tokens FROM ai_usage "
            f"WHERE user_id IS NOT NULL{used_since} GROUP BY user_id) "
            'SELECT u.name AS person, coalesce(s.messages, 0) AS messages, coalesce(a.ai_replies, 0) AS "AI replies", '
            'coalesce(p.tokens, 0) AS "AI tokens", s.last_message AS "last message" '
            "FROM users u LEFT JOIN sent s ON s.author_id = u.id LEFT JOIN asked a ON a.user_id = u.id "
            "LEFT JOIN used p ON p.user_id = u.id "
            "WHERE s.author_id IS NOT NULL OR a.user_id IS NOT NULL OR p.user_id IS NOT NULL "
            'ORDER BY "AI tokens" DESC, messages DESC, person',
            [*sent_params, *ASKS, *asked_params, *used_params],
        ).df()
    return frame


# admin gate ------------------------------------------------------------------
def password_ok(given: Any, expected: str | None) -> bool:
    """Whether ``given`` matches the admin password (constant-time); always True when none is set."""
    if not expected:
        return True
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


# SQL console -----------------------------------------------------------------
class QueryStopped(ValidationError):
    """A console query that did not answer (too slow, too big, bad SQL), with what it cost before it ended."""

    def __init__(self, message: str, kind: str, seconds: float, peak_mb: float) -> None:
        super().__init__(message)
        self.kind, self.seconds, self.peak_mb = kind, seconds, peak_mb


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


def check_readonly_sql(db: Database, sql: Any) -> str:
    """The one SELECT statement in ``sql``, or a ValidationError saying why it cannot run."""
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
    with db.analytics() as cur:
        serialized = cur.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0]
    tree = json.loads(serialized)
    if tree.get("error"):
        raise ValidationError(f"Only plain SELECT queries run in the console ({tree.get('error_message', 'unsupported')}).")
    _check_tree(tree)
    return text


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count + 1}")
    return unique


def run_readonly_sql(
    db: Database,
    sql: Any,
    max_rows: int = CONSOLE_MAX_ROWS,
    timeout_s: float = CONSOLE_TIMEOUT_S,
    memory_mb: int = CONSOLE_MEMORY_MB,
) -> pd.DataFrame:
    """Run one checked SELECT in the console's sandbox (``core.console``): a child process over a read-only copy.

    At most ``max_rows`` rows come back; ``frame.attrs`` holds ``truncated`` (more existed), ``seconds``,
    ``peak_mb`` (the child's peak memory) and ``as_of`` (when the data was copied, UTC). A query that runs
    longer than ``timeout_s`` or needs more than ``memory_mb`` is stopped (QueryStopped); every refusal or
    error is a ValidationError with a one-line message.
    """
    text = check_readonly_sql(db, sql)
    with db.console_source() as (source, as_of):
        try:
            answer = console.run(source, text, max_rows=max_rows, timeout_s=timeout_s, memory_mb=memory_mb)
        except console.ConsoleError as error:
            raise QueryStopped(str(error), error.kind, error.seconds, error.peak_mb) from None
    table = pa.ipc.open_stream(answer.ipc).read_all()
    table = table.rename_columns(_unique_names(table.column_names))
    frame = _to_pandas(table)
    frame.attrs.update(truncated=answer.truncated, seconds=answer.seconds, peak_mb=answer.peak_mb,
                       as_of=as_of.isoformat(sep=" ", timespec="seconds"))
    return frame
