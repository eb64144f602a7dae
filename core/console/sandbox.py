"""The SQL console's sandbox: each query runs in a child process with a memory cap and is killed at its time cap.

Why a child process (measured on DuckDB 1.5, see README "SQL console"): inside the app's own process
nothing bounds one query.

* ``interrupt()`` is only looked at between chunks of work. An operator that builds one huge value
  (``list(range(n))`` finalising a 10M-element list, ``repeat()``) runs to its end first: interrupted at
  2 s, ``SELECT list(range(10000000))`` stopped at 5.7 s; the issue's ``list(range(200000000))`` ran 79 s.
* DuckDB has no per-query memory limit. ``memory_limit`` is one budget for the whole database (so a
  console query that fills it makes the chat's own writes fail), and it covers only buffer-managed
  memory: with ``memory_limit='300MB'`` the same ``list(range(10000000))`` took the process to 1.15 GB.

So the app checks the SQL (one read-only SELECT, see ``core.console.guard``) and hands it to a fresh
``python core/console/child.py`` (see there for its caps). The app kills it at the time cap. Whatever
the query does, the app's process neither waits nor grows.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.console import child
from core.console.snapshot import scratch_folder

CHILD_SCRIPT = os.path.abspath(child.__file__)  # run as a script: the child imports nothing of the app

CHILD_THREADS = 1  # the console gets one core; the chat keeps the other (Community Cloud has two)
TEMP_MAX_MB = 512  # disk a console query may spill to (sorts and joins larger than memory)
EXIT_GRACE = 0.5  # seconds between the child's own deadline and the app's SIGKILL
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


def run(source: dict[str, Any], sql: str, *, max_rows: int, timeout_s: float, memory_mb: int) -> Answer:
    """Run one checked SELECT in a child process over ``source`` (``Database.console_source``: a DuckDB snapshot
    file, or the statement that attaches Postgres read-only)."""
    job = {"source": source, "sql": sql, "max_rows": max_rows, "memory_mb": memory_mb,
           "deadline_s": timeout_s, "threads": CHILD_THREADS, "temp_mb": TEMP_MAX_MB}
    env = {k: v for k, v in os.environ.items() if k in CHILD_ENV_KEEP}
    started = job["started"] = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
    job["temp_dir"] = tempfile.mkdtemp(prefix="spill-", dir=scratch_folder())  # removed below, even after a kill
    try:
        process = subprocess.Popen([sys.executable, CHILD_SCRIPT], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
        out, err, code, peak_kb, killed = _wait(process, json.dumps(job).encode(), timeout_s + EXIT_GRACE)
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
            raise ConsoleError(child.too_big(memory_mb), "memory", seconds, peak_mb)
        last = (err.decode(errors="replace").strip().splitlines() or ["no answer"])[-1]
        raise ConsoleError(f"The console could not run the query ({last[:200]}).", "crash", seconds, peak_mb)
    return Answer(body, bool(status.get("truncated")), seconds, peak_mb)


def _wait(process: subprocess.Popen, job: bytes, timeout_s: float) -> tuple[bytes, bytes, int, int, bool]:
    """Feed the job, collect the output, SIGKILL at ``timeout_s``; (stdout, stderr, exit code, peak RSS KB, killed)."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream, key: str) -> None:
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(process.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(process.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        process.stdin.write(job)
        process.stdin.close()
    except BrokenPipeError:
        pass  # the child died at start; its exit status says why
    lock, state = threading.Lock(), {"reaped": False, "killed": False}

    def kill() -> None:
        with lock:  # the child is not reaped yet (waitid WNOWAIT below), so its pid cannot be reused meanwhile
            if not state["reaped"]:
                state["killed"] = True
                os.kill(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    with lock:
        state["reaped"] = True
    timer.cancel()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return b"".join(chunks["out"]), b"".join(chunks["err"]), process.returncode, usage.ru_maxrss, state["killed"]
