"""Snapshots of a DuckDB file for the console's child process: one consistent copy, reused for a few seconds.

The child cannot open the live DuckDB file: the app's process holds DuckDB's lock on it. It reads a
snapshot instead: the file (and its write-ahead log) copied while the app's writers are held off, so
the copy is one consistent state; a snapshot is reused for SNAPSHOT_MAX_AGE seconds. The snapshots
and the children's spill folders live in one temporary folder (``scratch_folder``), removed at exit.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

SNAPSHOT_MAX_AGE = 10.0  # seconds a DuckDB snapshot is reused: quick follow-up queries do not copy the file again
IDLE_SNAPSHOT_AGE = 60.0  # seconds after which an unused snapshot of another database file is deleted


@dataclass
class _Snapshot:
    path: str
    taken: float  # time.monotonic()
    taken_at: Any  # the database clock's time, shown as "data as of"
    users: int = 0
    retired: bool = False
    files: list[str] = field(default_factory=list)

    def remove(self) -> None:
        for name in self.files:
            try:
                os.remove(name)
            except FileNotFoundError:
                pass


_snapshots: dict[str, _Snapshot] = {}
_snapshots_lock = threading.Lock()
_folder: list[str] = []


def scratch_folder() -> str:
    """This process's folder for console snapshots and spill files (made on first use, removed at exit)."""
    if not _folder:
        _folder.append(tempfile.mkdtemp(prefix="channel-chat-console-"))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0]


def _copy(db) -> _Snapshot:
    """Checkpoint and copy the database file while no write can land: one consistent state."""
    folder = scratch_folder()
    target = os.path.join(folder, f"snapshot-{time.monotonic_ns()}.duckdb")
    files = [target]
    with db.write_lock():
        # Fold the write-ahead log into the file first: the copy is then one file, and replaying a copied log
        # fails on DuckDB 1.5 after schema changes ("Failure while replaying WAL file"). On a read-only or full
        # disk the log is copied as it is (the app checkpoints right after migrating: no schema change in it).
        db.checkpoint()
        shutil.copyfile(db.path, target)
        if os.path.exists(db.path + ".wal"):
            shutil.copyfile(db.path + ".wal", target + ".wal")
            files.append(target + ".wal")
        taken_at = db.clock()
    return _Snapshot(target, time.monotonic(), taken_at, files=files)


@contextmanager
def duckdb_source(db, max_age: float = SNAPSHOT_MAX_AGE) -> Iterator[tuple[dict[str, Any], Any]]:
    """A snapshot of ``db``'s file for a console child, at most ``max_age`` s old: ({"duckdb": path}, taken at)."""
    key = os.path.abspath(db.path)
    with _snapshots_lock:
        snapshot = _snapshots.get(key)
        if snapshot is None or time.monotonic() - snapshot.taken >= max_age:
            if snapshot is not None:
                snapshot.retired = True
                if snapshot.users == 0:
                    snapshot.remove()
            for other_key, other in list(_snapshots.items()):  # other databases' idle snapshots (tests open many)
                if other.users == 0 and time.monotonic() - other.taken >= IDLE_SNAPSHOT_AGE:
                    other.remove()
                    del _snapshots[other_key]
            snapshot = _snapshots[key] = _copy(db)
        snapshot.users += 1
    try:
        yield {"duckdb": snapshot.path}, snapshot.taken_at
    finally:
        with _snapshots_lock:
            snapshot.users -= 1
            if snapshot.retired and snapshot.users == 0:
                snapshot.remove()
