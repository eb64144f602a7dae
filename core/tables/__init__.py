"""Inspect the app's own tables: the catalog, the browser, exports, overview charts, the SQL console and who may use them.

Each job has its module (``catalog``, ``browser``, ``export``, ``overview``, ``sql_console``, ``access``;
``reads`` is how they all read); this package re-exports the names pages, benchmarks and tests use.
Table and column names come from DuckDB's catalog and are quoted; every value is bound with ``?``.
"""
from __future__ import annotations

from core.console import SQL_MAX_CHARS, check_readonly_sql
from core.tables.access import (
    PRIVATE_TABLES,
    admin_unlocked,
    asks_password,
    may_see,
    offers_console,
    password_ok,
    visible_tables,
)
from core.tables.browser import (
    AI_AUTHOR,
    DEFAULT_PAGE_SIZE,
    PAGE_SIZES,
    TEXT_PREVIEW_CHARS,
    TIME_RANGES,
    Filters,
    Sort,
    browse,
    count_rows,
    filter_support,
    page_count,
    since_for,
)
from core.tables.catalog import (
    MESSAGES,
    Column,
    TableInfo,
    browse_columns,
    column_kinds,
    list_tables,
    message_view,
    status_values,
    table_columns,
)
from core.tables.export import EXPORT_MAX_ROWS, export_csv, export_frame, export_parquet, to_csv, to_parquet
from core.tables.overview import (
    BUCKETS,
    ai_feedback,
    ai_timings,
    error_reasons,
    messages_over_time,
    overview_totals,
    tokens_per_day,
    usage_by_person,
)
from core.tables.sql_console import (
    CONSOLE_EXAMPLE,
    CONSOLE_MAX_ROWS,
    CONSOLE_MEMORY_MB,
    CONSOLE_TIMEOUT_S,
    QueryStopped,
    run_readonly_sql,
)

__all__ = [
    "AI_AUTHOR", "BUCKETS", "CONSOLE_EXAMPLE", "CONSOLE_MAX_ROWS", "CONSOLE_MEMORY_MB", "CONSOLE_TIMEOUT_S",
    "DEFAULT_PAGE_SIZE", "EXPORT_MAX_ROWS", "MESSAGES", "PAGE_SIZES", "PRIVATE_TABLES", "SQL_MAX_CHARS",
    "TEXT_PREVIEW_CHARS", "TIME_RANGES", "Column", "Filters", "QueryStopped", "Sort", "TableInfo",
    "admin_unlocked", "ai_feedback", "ai_timings", "asks_password", "browse", "browse_columns", "check_readonly_sql",
    "column_kinds", "count_rows", "error_reasons", "export_csv", "export_frame", "export_parquet",
    "filter_support", "list_tables", "may_see", "message_view", "messages_over_time", "offers_console",
    "overview_totals", "page_count", "password_ok", "run_readonly_sql", "since_for", "status_values",
    "table_columns", "to_csv", "to_parquet", "tokens_per_day", "usage_by_person", "visible_tables",
]
