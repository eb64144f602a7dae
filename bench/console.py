"""SQL console bounds: a runaway query in the app's own DuckDB (database-wide limits) against the sandbox child.

Run ``python bench/console.py`` (``--cap 5 --budget 256``); it prints Markdown tables. Each query runs in a
fresh Python process that plays the app: a DuckDB file made by ``core.store.connect`` with 20,000 messages and
a thread sending a chat message every 50 ms throughout. Two designs:

- ``in-process``: the query on the app's own DuckDB with ``memory_limit`` = the budget, ``threads`` = 2 and
  ``max_temp_directory_size``, interrupted (``cursor.interrupt()``) at the cap, as the console did before;
- ``sandbox``: ``core.tables.run_readonly_sql`` (checked SQL, a child process over a snapshot, RLIMIT_AS,
  SIGKILL at the cap).

For each: seconds until the query ended, the app process's peak RSS (and the console child's), how the
query ended, and the chat sends' latency (p50/p99) and failures while it ran. A second table gives the
snapshot's cost (checkpoint + file copy while writers wait) at several database sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERIES = {
    "list(range(200M))": "SELECT list(range(200000000))",
    "repeat('x', 2e9)": "SELECT repeat('x', 2000000000)",
    "list(range(10M))": "SELECT list(range(10000000))",
    "cross join + sum": "SELECT count(*), sum(a.range * b.range) FROM range(1000000) a, range(1000000) b",
    "endless recursion": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
}
SAFETY_RLIMIT_GB = 6  # the in-process variant may grow far past its budget: keep the bench machine alive
SEND_EVERY = 0.05  # seconds between chat sends during the query

PLAY_APP = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    sys.path.insert(0, ROOT)
    limit = SAFETY_RLIMIT_GB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from core import chat, tables
    from core.store import connect
    job = json.loads(sys.argv[1])
    db = connect(job["path"])
    user, channel = chat.create_user(db, "Ann"), chat.create_channel(db, "bench", reply_policy="off")
    db.write(lambda tx: tx.execute(
        "INSERT INTO messages (channel_id, author_id, content, created_at, status, updated_at, stopped) "
        "SELECT ?, ?, repeat('chat ', 40), now()::TIMESTAMP, 'complete', now()::TIMESTAMP, false FROM range(20000)",
        [channel, user]))
    if job["design"] == "in-process":
        db.rows(f"SET memory_limit = '{job['budget']}MB'")
        db.rows("SET threads = 2")
        db.rows("SET max_temp_directory_size = '512MB'")
    latencies, failures, running = [], [], threading.Event()
    running.set()

    def sender():
        while running.is_set():
            started = time.monotonic()
            try:
                chat.send_message(db, channel, user, "still chatting")
                latencies.append((time.monotonic() - started) * 1000)
            except Exception as error:
                failures.append(str(error).splitlines()[0][:80])
            time.sleep(SEND_EVERY)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    time.sleep(0.5)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    child_peak = None
    if job["design"] == "in-process":
        with db.cursor() as cur:
            timer = threading.Timer(job["cap"], cur.interrupt)
            timer.start()
            try:
                cur.execute(job["sql"]).fetchall()
                outcome = "finished"
            except Exception as error:
                outcome = type(error).__name__.replace("Exception", "")
            timer.cancel()
    else:
        try:
            tables.run_readonly_sql(db, job["sql"], timeout_s=job["cap"], memory_mb=job["budget"])
            outcome = "finished"
        except tables.QueryStopped as error:
            outcome, child_peak = error.kind, error.peak_mb
    elapsed = time.monotonic() - started
    running.clear()
    thread.join()
    print(json.dumps({"elapsed": elapsed, "outcome": outcome, "base_rss": base_rss, "child_peak": child_peak,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "latencies": latencies, "failures": failures}))
    """
).replace("ROOT", repr(ROOT)).replace("SAFETY_RLIMIT_GB", str(SAFETY_RLIMIT_GB)).replace("SEND_EVERY", str(SEND_EVERY))

SNAPSHOT_COST = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, ROOT)
    sys.path.insert(0, ROOT + "/bench")
    from hot_query import build_duckdb
    from core.console import snapshot as console
    import os
    job = json.loads(sys.argv[1])
    db, _, _ = build_duckdb(job["path"], job["size"], 100)
    db.write(lambda tx: tx.execute("UPDATE messages SET content = content || ' edited' WHERE id % 50 = 0"))
    pauses = []
    for _ in range(3):
        started = time.monotonic()
        snapshot = console._copy(db)
        pauses.append((time.monotonic() - started) * 1000)
        snapshot.remove()
        db.write(lambda tx: tx.execute("UPDATE messages SET status = 'complete' WHERE id % 997 = 0"))
    print(json.dumps({"mb": os.path.getsize(job["path"]) / 2**20, "pauses": pauses}))
    """
).replace("ROOT", repr(ROOT))


def run(script: str, job: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", script, json.dumps(job)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"crash": (done.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=float, default=5.0)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    args = parser.parse_args()
    print(f"Cap {args.cap:g} s, budget {args.budget} MB; a chat send every {SEND_EVERY * 1000:.0f} ms meanwhile.\n")
    print("| query | design | ended after s | how | app peak RSS MB (before) | console child peak MB "
          "| sends | send p50 ms | send p99 ms | sends failed |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, sql in QUERIES.items():
        for design in ("in-process", "sandbox"):
            with tempfile.TemporaryDirectory() as folder:
                result = run(PLAY_APP, {"path": os.path.join(folder, "chat.duckdb"), "design": design, "sql": sql,
                                        "cap": args.cap, "budget": args.budget})
            if "crash" in result:
                print(f"| {name} | {design} | — | app crashed: {result['crash']} | | | | | | |")
                continue
            lat = result["latencies"]
            child = f"{result['child_peak']:.0f}" if result["child_peak"] else "—"
            print(f"| {name} | {design} | {result['elapsed']:.2f} | {result['outcome']} | "
                  f"{result['peak_rss']:.0f} ({result['base_rss']:.0f}) | {child} | {len(lat)} | "
                  f"{statistics.median(lat) if lat else float('nan'):.1f} | {percentile(lat, 0.99):.1f} | "
                  f"{len(result['failures'])} |")
    print("\nSnapshot for the sandbox (checkpoint + copy while writers wait), 3 takes each after some writes:\n")
    print("| messages | file MB | pause ms (each take) |")
    print("|---:|---:|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            result = run(SNAPSHOT_COST, {"path": os.path.join(folder, "chat.duckdb"), "size": size})
        pauses = ", ".join(f"{p:.0f}" for p in result.get("pauses", []))
        print(f"| {size:,} | {result.get('mb', float('nan')):.0f} | {pauses or result.get('crash')} |")


if __name__ == "__main__":
    main()
