"""Open a brand-new database file, reach a point of its first seconds, say "ready" and wait to be killed.

Usage: python tests/young_child.py DB_PATH POINT, where POINT is one of
  connected        connect() returned (migrated, nothing else written)
  migrating:N      inside migration N's transaction, before its commit
  migrated:N       right after migration N committed (before any checkpoint)
  sent:N           after N confirmed sends ("sent <i>" is printed after each commit)
  running          says "go" just before connect(), then sends without end, printing "sent <i>" after each
                   commit (killed a chosen time after "go")
tests/test_db_faults.py kills it with SIGKILL and opens the file again.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import chat  # noqa: E402
from core.store import (  # noqa: E402
    connect,  # noqa: E402
    duck,
    migrations,
)

LIFETIME = 30  # seconds: never outlive a test that failed to kill this process


def wait_to_be_killed() -> None:
    print("ready", flush=True)
    time.sleep(LIFETIME)
    os._exit(1)


def hold_in_migration(number: int, after_commit: bool) -> None:
    """Make migration ``number`` (1-based) stop the process inside its transaction or right after its commit."""
    name, step = migrations.MIGRATIONS[number - 1]
    if after_commit:
        commit = duck.DuckMigrator.commit

        def commit_then_wait(self) -> None:
            commit(self)
            if self.execute("SELECT count(*) FROM migrations WHERE name = ?", [name]).fetchone()[0]:
                wait_to_be_killed()

        duck.DuckMigrator.commit = commit_then_wait
    else:
        def step_then_wait(m) -> None:
            step(m)
            wait_to_be_killed()

        migrations.MIGRATIONS[number - 1] = (name, step_then_wait)


def main(path: str, point: str) -> None:
    kind, _, number = point.partition(":")
    if kind in ("migrating", "migrated"):
        hold_in_migration(int(number), after_commit=kind == "migrated")
    if kind == "running":
        print("go", flush=True)
    db = connect(path)
    if kind == "connected":
        wait_to_be_killed()
    user_id = chat.create_user(db, "Ann")
    channel_id = chat.create_channel(db, "general", reply_policy="off")
    count = int(number) if kind == "sent" else None
    i = 0
    while count is None or i < count:
        chat.send_message(db, channel_id, user_id, f"message {i}")
        print(f"sent {i}", flush=True)
        i += 1
    wait_to_be_killed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
