"""DuckDB file vs Postgres, side by side in one run: the verbs' costs and cross-process propagation.

Run ``python bench/store.py`` (``--messages 100000 --sends 400 --pg postgresql://...``); without ``--pg`` it
starts a throwaway Postgres server (Debian's binaries, tests/pgserver.py). For each backend it bulk-loads
``--messages`` messages over 100 channels, then times:

- ``send_message`` from 1 and 16 threads (reply policy 'off', and 'every', which also stores a reply and its job);
- ``list_messages`` through the recent-message cache (warm), and straight from the database;
- ``stream_reply``, one write of a growing AI reply (a reply makes up to 4 of these a second);
- on Postgres only: propagation from a write committed in another process to this process's cache
  (the time from the writer's commit returning to this process's version bump; a DuckDB file has one process).

Targets (issue 9): Postgres send_message p50 no slower than the DuckDB file's; cached list_messages unchanged (µs);
cross-process propagation p95 <= 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from core import chat, jobs, replies  # noqa: E402
from core.store import connect  # noqa: E402

CHANNELS = 100  # the bulk load's channels
USERS = 20
PROPAGATION_SENDS = 100  # writes the other process makes, 20 ms apart
PROPAGATION_GAP_S = 0.02
TARGET_PROPAGATION_P95_MS = 50.0


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return pick(0.50), pick(0.99)


def bulk_load(db, messages: int) -> tuple[list[int], list[int]]:
    users = [chat.create_user(db, f"user {i}") for i in range(USERS)]
    channels = [chat.create_channel(db, f"channel {i}", reply_policy="off") for i in range(CHANNELS)]
    generate = (
        "SELECT i FROM range(?) r(i)" if db.dialect.name == "duckdb" else "SELECT i FROM generate_series(0, ? - 1) r(i)"
    )
    db.write(lambda tx: tx.execute(
        "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
        f"SELECT ? + i % ?, ? + i % ?, 'bulk message ' || i, 'complete', ?, ? FROM ({generate}) g",
        [channels[0], CHANNELS, users[0], USERS, db.clock(), db.clock(), messages],
    ))
    if db.dialect.name == "postgres":
        db.write(lambda tx: tx.execute("ANALYZE messages"))
    return users, channels


def time_calls(call, args: list) -> list[int]:
    samples = []
    for arg in args:
        begin = time.perf_counter_ns()
        call(arg)
        samples.append(time.perf_counter_ns() - begin)
    return samples


def time_sends(db, channel_id: int, users: list[int], threads: int, sends: int) -> list[int]:
    samples: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def sender(n: int) -> None:
        mine = []
        start.wait()
        for j in range(max(1, sends // threads)):
            begin = time.perf_counter_ns()
            chat.send_message(db, channel_id, users[n % len(users)], f"bench {n}:{j}")
            mine.append(time.perf_counter_ns() - begin)
        with lock:
            samples.extend(mine)

    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return samples


def propagation(url: str, channel_id: int, user_id: int, db) -> list[float]:
    """Milliseconds from another process's commit to this process's cache hearing of it."""
    heard: list[float] = []
    unsubscribe = db.recent.subscribe(lambda c, v: c == channel_id and heard.append(time.time()))
    child = subprocess.run(
        [sys.executable, __file__, "--child-writer", url, str(channel_id), str(user_id)],
        capture_output=True, text=True, check=True,
    )
    time.sleep(0.2)
    unsubscribe()
    committed = json.loads(child.stdout)
    if len(heard) != len(committed):
        raise AssertionError(f"{len(committed)} commits but {len(heard)} notifications")
    return [(h - c) * 1000 for h, c in zip(heard, committed)]


def child_writer(url: str, channel_id: int, user_id: int) -> None:
    db = connect(url)
    stamps = []
    for i in range(PROPAGATION_SENDS):
        chat.send_message(db, channel_id, user_id, f"propagated {i}")
        stamps.append(time.time())
        time.sleep(PROPAGATION_GAP_S)
    db.close()
    print(json.dumps(stamps))


def run_backend(name: str, target: str, messages: int, sends: int, calls: int) -> dict:
    began = time.perf_counter()
    db = connect(target)
    users, channels = bulk_load(db, messages)
    print(f"{name}: loaded {messages:,} messages in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    rng = random.Random(7)
    picks = [rng.choice(channels) for _ in range(calls)]
    for channel_id in channels:
        chat.list_messages(db, channel_id)  # warm, as a long-running app has it
    result = {"backend": name, "rows": {}}
    result["rows"]["list_messages (cached)"] = percentiles(time_calls(lambda c: chat.list_messages(db, c), picks))
    uncached = time_calls(lambda c: chat.read_messages_uncached(db, c), picks[: max(50, calls // 10)])
    result["rows"]["list_messages (from the database)"] = percentiles(uncached)
    for policy in ("off", "every"):
        channel_id = chat.create_channel(db, f"send {policy}", reply_policy=policy)
        for threads in (1, 16):
            result["rows"][f"send_message, policy '{policy}', {threads} thread(s)"] = percentiles(
                time_sends(db, channel_id, users, threads, sends)
            )
    job = jobs.claim_next_job(db)
    texts = [("word " * n).strip() for n in range(1, sends + 1)]
    result["rows"]["stream_reply (one write of a growing reply)"] = percentiles(
        time_calls(lambda text: replies.stream_reply(db, job.reply_id, text, job_id=job.id), texts)
    )
    if db.dialect.name == "postgres":
        quiet = chat.create_channel(db, "propagation", reply_policy="off")
        chat.list_messages(db, quiet)
        lags = sorted(propagation(target, quiet, users[0], db))
        result["propagation_ms"] = (statistics.median(lags), lags[int(0.95 * (len(lags) - 1))], lags[-1])
    db.close()
    return result


def print_tables(results: list[dict]) -> None:
    names = [r["backend"] for r in results]
    print("| call | " + " | ".join(f"{n} p50 µs | {n} p99 µs" for n in names) + " | p50 Postgres / DuckDB |")
    print("|---|" + "---:|---:|" * len(names) + "---:|")
    for call in results[0]["rows"]:
        cells = " | ".join(f"{r['rows'][call][0]:,.1f} | {r['rows'][call][1]:,.1f}" for r in results)
        ratio = results[1]["rows"][call][0] / results[0]["rows"][call][0] if len(results) > 1 else float("nan")
        print(f"| {call} | {cells} | {ratio:.2f}x |")
    for r in results:
        if "propagation_ms" in r:
            p50, p95, worst = r["propagation_ms"]
            met = "met" if p95 <= TARGET_PROPAGATION_P95_MS else "MISSED"
            print()
            print("| cross-process propagation (write in A -> B's cache) | p50 ms | p95 ms | max ms | target p95 <= 50 ms |")
            print("|---|---:|---:|---:|---|")
            print(f"| {r['backend']}, {PROPAGATION_SENDS} writes | {p50:.2f} | {p95:.2f} | {worst:.2f} | {met} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--pg", help="a Postgres URL of an empty database (default: start a throwaway server)")
    parser.add_argument("--child-writer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_writer:
        child_writer(args.child_writer[0], int(args.child_writer[1]), int(args.child_writer[2]))
        return []
    server = None
    url = args.pg
    if url is None:
        from pgserver import PostgresServer

        server = PostgresServer().start()
        url = server.create_database()
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = [
                run_backend("DuckDB file", os.path.join(folder, "bench.duckdb"), args.messages, args.sends, args.calls),
                run_backend("Postgres", url, args.messages, args.sends, args.calls),
            ]
    finally:
        if server is not None:
            server.cleanup()
    print_tables(results)
    return results


if __name__ == "__main__":
    main()
