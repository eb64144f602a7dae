"""The console's child process: read one job on stdin, run its SELECT within its caps, answer on stdout.

Run as ``python core/console/child.py`` by ``core.console.sandbox``; it imports nothing of the app (a
lean start, and nothing of the app's state or secrets), only DuckDB and pyarrow. It opens the data
read-only (a DuckDB snapshot file, or Postgres attached read-only with the statement the backend
composed), caps its own address space (``RLIMIT_AS``: the budget on top of what it uses once started)
and DuckDB's ``memory_limit`` (half the budget, so most queries fail in DuckDB's words first), runs on
one thread, stops its query at the time cap, and answers with a JSON status line and Arrow IPC.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

RESULT_MAX_BYTES = 32 * 2**20  # Arrow bytes a console answer may take: 1,000 rows of 32 KB each
DUCKDB_SHARE = 0.5  # DuckDB's memory_limit as a share of the budget; the rest covers what DuckDB does not count


def too_big(memory_mb: int) -> str:
    """What a person reads when a query needed more than the console's memory."""
    return (f"The query needed more than the console's {memory_mb} MB of memory and was stopped; "
            "narrow it down (WHERE, LIMIT, fewer or shorter columns).")


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
    # libpq reads the server options here too (the DSN has none): read-only, and the server ends the query at
    # the cap as well (a killed child's scan would otherwise run on).
    os.environ["PGOPTIONS"] = f"{source['options']} -c statement_timeout={int(job['deadline_s'] * 1000)}"
    connection = duckdb.connect(":memory:", config=config)
    connection.execute("LOAD postgres_scanner")
    connection.execute(source["attach"])  # composed and quoted by the Postgres backend
    connection.execute(source["use"])
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
        _answer({"error": too_big(job["memory_mb"]), "kind": "memory", "detail": _first_line(error)})
        return
    except duckdb.Error as error:
        kind = "memory" if "Out of Memory" in str(error) else "sql"
        _answer({"error": too_big(job["memory_mb"]) if kind == "memory" else _first_line(error), "kind": kind})
        return
    except (OSError, pa.ArrowException) as error:  # DuckDB's Arrow conversion reports a failed allocation as OSError
        kind = "memory" if "allocate" in str(error).lower() or "out of memory" in str(error).lower() else "sql"
        _answer({"error": too_big(job["memory_mb"]) if kind == "memory" else _first_line(error), "kind": kind})
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
