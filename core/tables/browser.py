"""The table browser: one page of a table, narrowed by filters, sorted, counted; each page is one LIMIT/OFFSET query.

Values are bound with ``?``; column names come from the catalog (``core.tables.catalog``) and are quoted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from core.errors import ValidationError
from core.store import Database
from core.store.quoting import identifier
from core.tables.catalog import MESSAGES, Column, browse_columns, browse_source, message_view, table_columns
from core.tables.reads import frame_of, read_one

CHANNELS = "channels"  # its rows are channels: filtered by their own id
PAGE_SIZES = (25, 50, 100, 250)  # rows per page: a page is one LIMIT/OFFSET query, never the whole table
DEFAULT_PAGE_SIZE = 50
TEXT_PREVIEW_CHARS = 300  # a cell shows this much of a long text (messages go up to 1 MB); exports carry it all
AI_AUTHOR = 0  # ids start at 1, so author 0 selects the AI's messages (author_id IS NULL)
TIME_RANGES: dict[str, timedelta | None] = {
    "All time": None,
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}
# The JSON sent to the model repeats earlier messages: searching it would match every reply after a hit.
TEXT_SEARCH_SKIP = frozenset({"context"})


@dataclass(frozen=True)
class Filters:
    """What the browser narrows a table to; each filter applies only where the table has its column."""

    channel_id: int | None = None  # column channel_id
    author_id: int | None = None  # column author_id; AI_AUTHOR for the AI's messages
    status: str | None = None  # column status (messages) or state (ai_jobs)
    since: datetime | None = None  # column created_at, naive UTC, inclusive
    until: datetime | None = None  # column created_at, exclusive
    text: str | None = None  # case-insensitive substring of any text column
    # Who reads (not an admin): only rows of the channels this SQL subquery returns (core.membership.readable_channels),
    # in every table that names a channel (channel_id), and the channels table itself. None: every row (admins).
    readable: tuple[str, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Sort:
    column: str
    descending: bool = True


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


def since_for(label: str, now: datetime) -> datetime | None:
    """The start of a named time range (TIME_RANGES) ending ``now``."""
    if label not in TIME_RANGES:
        raise ValidationError(f"Time range must be one of {', '.join(TIME_RANGES)}, not {label!r}.")
    span = TIME_RANGES[label]
    return None if span is None else now - span


def _where(columns: list[Column], filters: Filters, table: str = "") -> tuple[str, list[Any]]:
    names = {c.name for c in columns}
    clauses: list[str] = []
    params: list[Any] = []
    if filters.readable is not None:
        column = "id" if table == CHANNELS else "channel_id" if "channel_id" in names else None
        if column is not None:
            clauses.append(f"{identifier(column)} IN ({filters.readable[0]})")
            params.extend(filters.readable[1])
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
            clauses.append(f"{identifier(column)} = ?")
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
            clauses.append("(" + " OR ".join(f"contains(lower({identifier(n)}), ?)" for n in searched) + ")")
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
    order = f"{identifier(sort.column)} {direction} NULLS LAST"
    if sort.column != "id" and "id" in names:
        order += f", id {direction}"  # a tie-breaker keeps paging stable
    return order


@dataclass(frozen=True)
class Query:
    """The SQL behind a browser view: its count, and its rows in order (with LIMIT and OFFSET marks)."""

    count: str
    rows: str
    params: list[Any]


def plan(db: Database, table: str, filters: Filters, sort: Sort | None, preview: bool) -> Query:
    """The SQL for ``table`` under ``filters`` and ``sort``; ``preview`` cuts long texts (a page) or keeps them (an export)."""
    columns = browse_columns(db, table)
    order = _order(columns, sort)
    shown = ", ".join(
        f"left({identifier(c.name)}, {TEXT_PREVIEW_CHARS}) AS {identifier(c.name)}" if preview and c.type == "VARCHAR"
        else identifier(c.name)
        for c in columns
    )
    base = table_columns(db, table)
    if table == MESSAGES and not (filters.text or "").strip() and (sort is None or sort.column in {c.name for c in base}):
        # Filter, sort and cut the bare table, then join names to the rows kept: a page of a million
        # messages costs milliseconds instead of a join over all of them.
        where, params = _where(base, filters, table)
        rows = f"(SELECT * FROM messages{where} ORDER BY {order} LIMIT ? OFFSET ?)"
        return Query(f"SELECT count(*) FROM messages{where}", f"SELECT {shown} FROM ({message_view(rows)}) ORDER BY {order}", params)
    where, params = _where(columns, filters, table)
    source = browse_source(db, table)
    rows = f"SELECT {shown} FROM (SELECT * FROM {source} AS s{where} ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
    return Query(f"SELECT count(*) FROM {source} AS s{where}", rows, params)


def count_rows(db: Database, table: str, filters: Filters = Filters()) -> int:
    """How many rows of ``table`` pass ``filters``."""
    query = plan(db, table, filters, None, preview=True)
    return read_one(db, query.count, query.params)[0]


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
    query = plan(db, table, filters, sort, preview=True)
    with db.analytics() as cur:
        total = cur.execute(query.count, query.params).fetchone()[0]
        frame = frame_of(cur.execute(query.rows, [*query.params, page_size, (page - 1) * page_size]))
    return frame, total
