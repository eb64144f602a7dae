"""The SQL console's sandbox: each query runs in a child process with a memory cap and is killed at its time cap.

Why a child process (measured on DuckDB 1.5, see README "SQL console"): inside the app's own process
nothing bounds one query.

* ``interrupt()`` is only looked at between chunks of work. An operator that builds one huge value
  (``list(range(n))`` finalising a 10M-element list, ``repeat()``) runs to its end first: interrupted at
  2 s, ``SELECT list(range(10000000))`` stopped at 5.7 s; the issue's ``list(range(200000000))`` ran 79 s.
* DuckDB has no per-query memory limit. ``memory_limit`` is one budget for the whole database (so a
  console query that fills it makes the chat's own writes fail), and it covers only buffer-managed
  memory: with ``memory_limit='300MB'`` the same ``list(range(10000000))`` took the process to 1.15 GB.

So the app checks the SQL (one read-only SELECT, see ``core.tables.check_readonly_sql``) and hands it
to a fresh ``python core/console.py`` that opens the data read-only, caps its own address space
(``RLIMIT_AS``: the budget on top of what it uses once started) and DuckDB's ``memory_limit`` (half the
budget, so most queries fail in DuckDB's words first), runs on one thread, and answers with Arrow IPC.
The app kills it at the time cap. Whatever the query does, the app's process neither waits nor grows.

The child cannot open the live DuckDB file: the app's process holds DuckDB's lock on it. It reads a
snapshot instead: the file (and its write-ahead log) copied while the app's writers are held off, so
the copy is one consistent state; a snapshot is reused for SNAPSHOT_MAX_AGE seconds.
"""
from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

RESULT_MAX_BYTES = 32 * 2**20  # Arrow bytes a console answer may take: 1,000 rows of 32 KB each
DUCKDB_SHARE = 0.5  # DuckDB's memory_limit as a share of the budget; the rest covers what DuckDB does not count
CHILD_THREADS = 1  # the console gets one core; the chat keeps the other (Community Cloud has two)
TEMP_MAX_MB = 512  # disk a console query may spill to (sorts and joins larger than memory)
EXIT_GRACE = 0.5  # seconds between the child's own deadline and the app's SIGKILL
SNAPSHOT_MAX_AGE = 10.0  # seconds a DuckDB snapshot is reused: quick follow-up queries do not copy the file again
IDLE_SNAPSHOT_AGE = 60.0  # seconds after which an unused snapshot of another database file is deleted
CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")  # no secrets reach the child


class ConsoleError(Exception):
    """A console query that did not answer: ``str()`` says why in words; ``kind`` is memory, time, sql, open or crash."""

    def __init__(self, message: str, kind: str, seconds: float = 0.0, peak_mb: float = 0.0) -> None:
        super().__init__(message)
        self.kind, self.seconds, self.peak_mb = kind, seconds, peak_mb


@dataclass(frozen=True)
class Answer:
    """A console query's rows (Arrow IPC stream bytes) and what running it cost."""

    ipc: bytes
    truncated: bool
    seconds: float
    peak_mb: float  # the child's peak resident memory


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


def _snapshot_folder() -> str:
    if not _folder:
        _folder.append(tempfile.mkdtemp(prefix="channel-chat-console-"))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0]


def _copy(db) -> _Snapshot:
    """Checkpoint and copy the database file while no write can land: one consistent state."""
    folder = _snapshot_folder()
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


def run(source: dict[str, Any], sql: str, *, max_rows: int, timeout_s: float, memory_mb: int) -> Answer:
    """Run one checked SELECT in a child process over ``source`` (``Database.console_source``: a DuckDB snapshot
    file, or a Postgres DSN to attach read-only)."""
    job = {"source": source, "sql": sql, "max_rows": max_rows, "memory_mb": memory_mb,
           "deadline_s": timeout_s, "threads": CHILD_THREADS, "temp_mb": TEMP_MAX_MB}
    env = {k: v for k, v in os.environ.items() if k in CHILD_ENV_KEEP}
    started = job["started"] = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
    job["temp_dir"] = tempfile.mkdtemp(prefix="spill-", dir=_snapshot_folder())  # removed below, even after a kill
    try:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
        out, err, code, peak_kb, killed = _wait(child, json.dumps(job).encode(), timeout_s + EXIT_GRACE)
    finally:
        shutil.rmtree(job["temp_dir"], ignore_errors=True)
    seconds, peak_mb = time.monotonic() - started, peak_kb / 1024
    if killed:
        raise ConsoleError(f"The query ran longer than {timeout_s:g} s and was stopped; narrow it down (WHERE, LIMIT).",
                           "time", seconds, peak_mb)
    head, _, body = out.partition(b"\n")
    try:
        status = json.loads(head) if head else {}
    except ValueError:
        status = {}
    if status.get("error"):
        raise ConsoleError(status["error"], status.get("kind", "sql"), seconds, peak_mb)
    if code != 0 or not status.get("ok"):
        if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS) or b"MemoryError" in err:
            raise ConsoleError(_too_big(memory_mb), "memory", seconds, peak_mb)
        last = (err.decode(errors="replace").strip().splitlines() or ["no answer"])[-1]
        raise ConsoleError(f"The console could not run the query ({last[:200]}).", "crash", seconds, peak_mb)
    return Answer(body, bool(status.get("truncated")), seconds, peak_mb)


def _too_big(memory_mb: int) -> str:
    return (f"The query needed more than the console's {memory_mb} MB of memory and was stopped; "
            "narrow it down (WHERE, LIMIT, fewer or shorter columns).")


def _wait(child: subprocess.Popen, job: bytes, timeout_s: float) -> tuple[bytes, bytes, int, int, bool]:
    """Feed the job, collect the output, SIGKILL at ``timeout_s``; (stdout, stderr, exit code, peak RSS KB, killed)."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream, key: str) -> None:
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(child.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(child.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        child.stdin.write(job)
        child.stdin.close()
    except BrokenPipeError:
        pass  # the child died at start; its exit status says why
    lock, state = threading.Lock(), {"reaped": False, "killed": False}

    def kill() -> None:
        with lock:  # the child is not reaped yet (waitid WNOWAIT below), so its pid cannot be reused meanwhile
            if not state["reaped"]:
                state["killed"] = True
                os.kill(child.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    with lock:
        state["reaped"] = True
    timer.cancel()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return b"".join(chunks["out"]), b"".join(chunks["err"]), child.returncode, usage.ru_maxrss, state["killed"]


# the child ---------------------------------------------------------------------------------------------------
def _vm_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _answer(status: dict, body: bytes = b"") -> None:
    sys.stdout.buffer.write(json.dumps(status).encode() + b"\n" + body)
    sys.stdout.buffer.flush()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _open(duckdb, job: dict):
    """The child's DuckDB: the snapshot file read-only, or Postgres attached read-only."""
    memory = max(16, int(job["memory_mb"] * DUCKDB_SHARE))
    config = {"threads": job["threads"], "memory_limit": f"{memory}MB", "temp_directory": job["temp_dir"],
              "max_temp_directory_size": f"{job['temp_mb']}MB"}
    source = job["source"]
    if "duckdb" in source:
        connection = duckdb.connect(source["duckdb"], read_only=True, config=config)
        connection.execute("SET enable_external_access = false")  # after temp_directory, which it would refuse
        return connection
    config.update(extension_directory=source["extension_directory"], autoinstall_known_extensions=False,
                  autoload_known_extensions=False)
    if source.get("password"):
        os.environ["PGPASSWORD"] = source["password"]  # libpq reads it; the DSN a query can see carries none
    connection = duckdb.connect(":memory:", config=config)
    connection.execute("LOAD postgres_scanner")
    # The server ends the query at the cap as well (a killed child's scan would otherwise run on).
    dsn = f"{source['postgres']} options='{source['options']} -c statement_timeout={int(job['deadline_s'] * 1000)}'"
    catalog = source["schema"].partition(".")[0]
    connection.execute(f"ATTACH '{dsn.replace(chr(39), chr(39) * 2)}' AS {catalog} (TYPE postgres, READ_ONLY)")
    connection.execute(f"USE {source['schema']}")
    connection.execute("SET enable_external_access = false")  # attached: from here on no files, no other servers
    return connection


def child_main() -> None:
    """Read a job from stdin, run it within its caps, write a status line and Arrow IPC to stdout."""
    job = json.loads(sys.stdin.buffer.read())
    import duckdb
    import pyarrow as pa

    try:
        connection = _open(duckdb, job)
        connection.execute("SELECT 1").fetchall()  # everything the engine needs is allocated before the cap
    except duckdb.Error as error:
        _answer({"error": f"The console could not open the data: {_first_line(error)}", "kind": "open"})
        return
    limit = (_vm_kb("VmSize") + job["memory_mb"] * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cursor = connection  # not a .cursor(): that is a new DuckDB connection, without the USE above
    # The cap counts from the app's spawn, start-up included; the app kills us EXIT_GRACE later anyway.
    timer = threading.Timer(max(0.0, job["started"] + job["deadline_s"] - time.monotonic()), cursor.interrupt)
    timer.start()
    try:
        reader = cursor.execute(job["sql"]).to_arrow_reader(job["max_rows"] + 1)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > job["max_rows"]:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, job["max_rows"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
    except duckdb.InterruptException:
        _answer({"error": f"The query ran longer than {job['deadline_s']:g} s and was stopped; "
                          "narrow it down (WHERE, LIMIT).", "kind": "time"})
        return
    except (duckdb.OutOfMemoryException, MemoryError) as error:
        _answer({"error": _too_big(job["memory_mb"]), "kind": "memory", "detail": _first_line(error)})
        return
    except duckdb.Error as error:
        kind = "memory" if "Out of Memory" in str(error) else "sql"
        _answer({"error": _too_big(job["memory_mb"]) if kind == "memory" else _first_line(error), "kind": kind})
        return
    except (OSError, pa.ArrowException) as error:  # DuckDB's Arrow conversion reports a failed allocation as OSError
        kind = "memory" if "allocate" in str(error).lower() or "out of memory" in str(error).lower() else "sql"
        _answer({"error": _too_big(job["memory_mb"]) if kind == "memory" else _first_line(error), "kind": kind})
        return
    finally:
        timer.cancel()
    if len(body) > RESULT_MAX_BYTES:
        _answer({"error": f"The answer is larger than {RESULT_MAX_BYTES // 2**20} MB; select fewer or shorter "
                          "columns, or fewer rows.", "kind": "memory"})
        return
    _answer({"ok": True, "truncated": rows > job["max_rows"]}, body)


if __name__ == "__main__":
    child_main()
