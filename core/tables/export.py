"""Exports of the table browser's view: its rows with full texts, as CSV or Parquet, capped at EXPORT_MAX_ROWS."""
from __future__ import annotations

import io

import pandas as pd

from core.store import Database
from core.tables.browser import Filters, Sort, plan
from core.tables.reads import frame_of

EXPORT_MAX_ROWS = 100_000  # ~100 MB of CSV at 1 KB a message: about what a browser download holds comfortably


def export_frame(
    db: Database, table: str, filters: Filters = Filters(), sort: Sort | None = None, limit: int = EXPORT_MAX_ROWS
) -> tuple[pd.DataFrame, bool]:
    """The filtered rows with full texts, at most ``limit`` of them, and whether the limit cut them."""
    query = plan(db, table, filters, sort, preview=False)
    with db.analytics() as cur:
        frame = frame_of(cur.execute(query.rows, [*query.params, limit + 1, 0]))
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
