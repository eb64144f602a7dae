"""The Tables page's SQL console: one query checked (``core.console.guard``), run in the sandbox, its rows as a DataFrame."""
from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from core import console
from core.errors import ValidationError
from core.store import Database
from core.tables.reads import to_pandas

CONSOLE_MAX_ROWS = 1000  # rows the console shows; more would only slow the page
CONSOLE_TIMEOUT_S = 5.0  # seconds before a console query is stopped: the page should not hang
CONSOLE_MEMORY_MB = 256  # memory a console query may use on top of its process's own (~90 MB): app + console fit in 1 GB
CONSOLE_EXAMPLE = (
    "SELECT c.name AS channel, count(*) AS messages, max(m.created_at) AS last_message\n"
    "FROM messages m JOIN channels c ON c.id = m.channel_id\nGROUP BY ALL ORDER BY messages DESC"
)


class QueryStopped(ValidationError):
    """A console query that did not answer (too slow, too big, bad SQL), with what it cost before it ended."""

    def __init__(self, message: str, kind: str, seconds: float, peak_mb: float) -> None:
        super().__init__(message)
        self.kind, self.seconds, self.peak_mb = kind, seconds, peak_mb


def _unique_names(names: list[str]) -> list[str]:
    """Column names made unique (a second ``id`` becomes ``id_2``): a DataFrame needs one name a column."""
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
    role: str | None = None,
) -> pd.DataFrame:
    """Run one checked SELECT in the console's sandbox (``core.console``): a child process over a read-only copy.

    At most ``max_rows`` rows come back; ``frame.attrs`` holds ``truncated`` (more existed), ``seconds``,
    ``peak_mb`` (the child's peak memory) and ``as_of`` (when the data was copied, UTC). A query that runs
    longer than ``timeout_s`` or needs more than ``memory_mb`` is stopped (QueryStopped); every refusal or
    error is a ValidationError with a one-line message. ``role``: on Postgres, the read-only role the query
    runs as (CONSOLE_ROLE).
    """
    with db.analytics() as cur:
        text = console.check_readonly_sql(cur, sql)
    with db.console_source(role) as (source, as_of):
        try:
            answer = console.run(source, text, max_rows=max_rows, timeout_s=timeout_s, memory_mb=memory_mb)
        except console.ConsoleError as error:
            raise QueryStopped(str(error), error.kind, error.seconds, error.peak_mb) from None
    table = pa.ipc.open_stream(answer.ipc).read_all()
    table = table.rename_columns(_unique_names(table.column_names))
    frame = to_pandas(table)
    frame.attrs.update(truncated=answer.truncated, seconds=answer.seconds, peak_mb=answer.peak_mb,
                       as_of=as_of.isoformat(sep=" ", timespec="seconds"))
    return frame
