"""How the Tables modules read: DuckDB SQL over the app's tables (on Postgres through DuckDB's read-only attachment).

Rows come back as tuples or as pandas DataFrames whose integer columns with NULLs stay integers.
"""
from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.store import Database

NULLABLE_INTS = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
}


def frame_of(result: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """A query's rows as a DataFrame; integer columns with NULLs stay integers (pandas would make them floats)."""
    return to_pandas(result.to_arrow_table())


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as a DataFrame, integer columns with NULLs kept as pandas' nullable integers."""
    return table.to_pandas(types_mapper=NULLABLE_INTS.get)


def read_rows(db: Database, sql: str, params: list[Any] | tuple = ()) -> list[tuple]:
    """DuckDB SQL over the app's tables (on Postgres through DuckDB's read-only attachment)."""
    with db.analytics() as cur:
        return cur.execute(sql, list(params)).fetchall()


def read_one(db: Database, sql: str, params: list[Any] | tuple = ()) -> tuple | None:
    """The first row of a DuckDB query over the app's tables, or None."""
    with db.analytics() as cur:
        return cur.execute(sql, list(params)).fetchone()
