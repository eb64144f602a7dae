"""DuckDB file faults: a database killed young opens again with every committed row; damaged or foreign
files, a full or read-only disk give a readable error naming the file and what to do, never DuckDB's text alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from core import chat
from core.db import connect
from core.errors import ChatError, DatabaseDamaged, DatabaseLocked, StorageError
from core.migrations import MIGRATIONS

CHILD = Path(__file__).with_name("young_child.py")
ALL_MIGRATIONS = [name for name, _ in MIGRATIONS]
READY_TIMEOUT = 30  # seconds for the child to reach its point on a busy machine


def _kill_at(path: Path, point: str, after: float = 0.0) -> list[str]:
    """Run the child until it says "ready" (or ``after`` s past its "go"), SIGKILL it; return what it printed."""
    child = subprocess.Popen([sys.executable, str(CHILD), str(path), point], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while (line := child.stdout.readline().strip()) not in ("ready", "go"):
            assert line or child.poll() is None, f"the child ended before {point}: {lines}"
            assert time.monotonic() < deadline, f"the child did not reach {point}"
            lines.append(line)
        time.sleep(after)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        lines += [line.strip() for line in child.stdout.read().splitlines()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return lines


def _reopened(path: Path, confirmed: int = 0) -> None:
    """The killed file opens, holds the whole schema and every confirmed send, and takes new writes."""
    db = connect(str(path))
    try:
        assert [name for (name,) in db.rows("SELECT name FROM migrations ORDER BY name")] == sorted(ALL_MIGRATIONS)
        contents = [content for (content,) in db.rows("SELECT content FROM messages ORDER BY id")]
        assert contents[:confirmed] == [f"message {i}" for i in range(confirmed)]
        user_id = chat.list_users(db)[0].id if chat.list_users(db) else chat.create_user(db, "Ann")
        channels = chat.list_channels(db)
        channel_id = channels[0].id if channels else chat.create_channel(db, "general", reply_policy="off")
        assert chat.send_message(db, channel_id, user_id, "after the kill")
    finally:
        db.close()
    again = connect(str(path))  # and once more after a clean close
    assert again.one("SELECT count(*) FROM messages WHERE content = 'after the kill'") == (1,)
    again.close()


POINTS = ["connected", "migrating:2", "migrated:1", "migrated:2", "migrated:3", f"migrated:{len(MIGRATIONS)}", "sent:3"]


@pytest.mark.parametrize("point", POINTS)
def test_a_database_killed_young_opens_again(tmp_path, point):
    path = tmp_path / "young.duckdb"
    printed = _kill_at(path, point)
    _reopened(path, confirmed=sum(line.startswith("sent ") for line in printed))


@pytest.mark.parametrize("after", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5])
def test_a_database_killed_at_any_moment_keeps_every_confirmed_send(tmp_path, after):
    """Killed a fixed time after it starts opening and sending: wherever that lands, nothing confirmed is lost."""
    path = tmp_path / "any.duckdb"
    printed = _kill_at(path, "running", after=after)
    _reopened(path, confirmed=sum(line.startswith("sent ") for line in printed))


def test_an_unreplayable_log_is_replayed_not_thrown_away(tmp_path):
    """The cause: DuckDB 1.5 cannot replay an ALTER TABLE on a table with a function default from its log.

    A raw DuckDB file in that state fails on every open; connect() replays the log attached to an
    in-memory database instead (where the lookup that fails has a default database) and keeps every row.
    """
    path = tmp_path / "raw.duckdb"
    script = (
        "import duckdb, os\n"
        f"c = duckdb.connect({str(path)!r})\n"
        "c.execute(\"CREATE SEQUENCE s\")\n"
        "c.execute(\"CREATE TABLE t (id BIGINT DEFAULT nextval('s'), x INTEGER)\")\n"
        "c.execute(\"INSERT INTO t (x) VALUES (1), (2)\")\n"
        "c.execute(\"ALTER TABLE t ADD COLUMN y INTEGER\")\n"
        "c.execute(\"INSERT INTO t (x, y) VALUES (3, 3)\")\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    with pytest.raises(duckdb.Error, match="Failure while replaying WAL"):
        duckdb.connect(str(path))  # DuckDB by itself cannot open it
    connect(str(path)).close()  # replays the log, then adds the app's tables beside t
    con = duckdb.connect(str(path))
    assert con.execute("SELECT id, x, y FROM t ORDER BY id").fetchall() == [(1, 1, None), (2, 2, None), (3, 3, 3)]
    con.execute("INSERT INTO t (x) VALUES (4)")
    assert con.execute("SELECT max(id) FROM t").fetchone() == (4,)  # the sequence carried on
    con.close()
