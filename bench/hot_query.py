"""Hot query: a channel's 10 newest messages, as every open page asks each second, at 1M and 5M messages.

Run ``python bench/hot_query.py`` (``--sizes 1000000,5000000 --channels 1000``); it prints Markdown tables.
For each size it builds, in a temporary folder, a DuckDB file through ``core.store.connect`` (users and
channels made by the verbs, messages bulk-inserted with ``INSERT ... SELECT FROM range()``) and the
same rows in SQLite (WAL, index on (channel_id, id)), then times over random channels:

- ``list_messages`` as the page calls it (through the recent-message cache, warmed);
- the same query on DuckDB directly (``read_messages_uncached``);
- SQLite, the same query with the join to users, rows turned into the same ``Message`` objects;
- a dict of deques holding the same ``Message`` objects (the floor for any in-process cache);

and ``send_message`` from 1 and 16 threads on an 'off' channel and an 'every' channel.
Targets: cached p50 >= 2x faster than SQLite, and within 10x of the dict.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.chat import (  # noqa: E402
    MESSAGE_COLUMNS,
    RECENT_LIMIT,
    create_channel,
    create_user,
    list_messages,
    read_messages_uncached,
    send_message,
)
from core.recent import CACHE_DEPTH, Message  # noqa: E402
from core.store import connect  # noqa: E402

USERS = 20  # authors of the bulk messages
AI_EVERY = 5  # every 5th bulk message is the AI's (author NULL), so the join meets both kinds
COPY_BATCH = 200_000  # rows per Arrow batch copied from DuckDB into SQLite
SQLITE_CACHE_KIB = 256 * 1024  # a generous page cache: SQLite at its best, not starved
DUCKDB_BUDGET = 15.0  # seconds of direct DuckDB calls per size: each scans the channel's column, so cap the count
CHECK_CHANNELS = 20  # channels on which every method must return the same ids
TARGET_VS_SQLITE = 2.0  # cached p50 at least this many times faster than SQLite
TARGET_VS_DICT = 10.0  # cached p50 at most this many times the dict of deques

SQLITE_QUERY = (
    "SELECT m.id, m.channel_id, m.author_id, u.name, m.content, m.status, m.error, m.created_at, m.updated_at, "
    "coalesce(m.stopped, 0), m.model, m.prompt_tokens, m.completion_tokens, m.ttft_ms, m.total_ms "
    "FROM messages m LEFT JOIN users u ON u.id = m.author_id WHERE m.channel_id = ? ORDER BY m.id DESC LIMIT ?"
)
MESSAGE_FIELDS = (
    "id, channel_id, author_id, content, created_at, status, error, updated_at, stopped, model, "
    "prompt_tokens, completion_tokens, ttft_ms, total_ms"
)
COPY_QUERY = (  # SQLite keeps timestamps as ISO text
    "SELECT id, channel_id, author_id, content, CAST(created_at AS VARCHAR), status, error, "
    "CAST(updated_at AS VARCHAR), stopped, model, prompt_tokens, completion_tokens, ttft_ms, total_ms "
    "FROM messages ORDER BY id"
)


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return pick(0.50), pick(0.99)


def timed(call, channels: list[int], budget: float | None = None) -> list[int]:
    """Nanoseconds per call over the channels, stopping early once ``budget`` seconds are spent."""
    samples = []
    deadline = time.perf_counter() + budget if budget else None
    clock = time.perf_counter_ns
    for channel_id in channels:
        start = clock()
        call(channel_id)
        samples.append(clock() - start)
        if deadline and len(samples) >= 20 and time.perf_counter() > deadline:
            break
    return samples


# building ----------------------------------------------------------------------
def build_duckdb(path: str, size: int, channel_count: int):
    """The app's database with ``size`` messages spread at random over ``channel_count`` channels."""
    db = connect(path)
    users = [create_user(db, f"user {i}") for i in range(USERS)]
    channels = [create_channel(db, f"channel {i}", reply_policy="off") for i in range(channel_count)]
    db.write(
        lambda tx: tx.execute(
            "INSERT INTO messages (channel_id, author_id, content, created_at, status, updated_at, stopped) "
            "SELECT ?::BIGINT + (hash(i) % ?)::BIGINT, "
            "       CASE WHEN i % ? = ? - 1 THEN NULL ELSE ?::BIGINT + (i % ?)::BIGINT END, "
            "       'message ' || i::VARCHAR || ': ' || repeat('chat ', (1 + hash(i * 7) % 12)::INTEGER), "
            "       TIMESTAMP '2025-01-01' + to_seconds(i::DOUBLE), 'complete', "
            "       TIMESTAMP '2025-01-01' + to_seconds(i::DOUBLE), false "
            "FROM range(?) t(i)",
            [channels[0], channel_count, AI_EVERY, AI_EVERY, users[0], USERS, size],
        )
    )
    db.rows("CHECKPOINT")  # the bulk rows leave the WAL now, not during the timed sends
    return db, users, channels


def build_sqlite(path: str, db) -> sqlite3.Connection:
    """The same users and messages in SQLite, WAL mode, indexed on (channel_id, id)."""
    lite = sqlite3.connect(path, check_same_thread=False)
    lite.execute("PRAGMA journal_mode = WAL")
    lite.execute("PRAGMA synchronous = NORMAL")
    lite.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    lite.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    lite.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL, author_id INTEGER, "
        "content TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT, error TEXT, updated_at TEXT, stopped INTEGER, "
        "model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, ttft_ms REAL, total_ms REAL)"
    )
    lite.executemany("INSERT INTO users VALUES (?, ?)", db.rows("SELECT id, name FROM users"))
    marks = ", ".join("?" for _ in MESSAGE_FIELDS.split(","))
    with db.cursor() as cur:
        for batch in cur.execute(COPY_QUERY).to_arrow_reader(COPY_BATCH):
            columns = [column.to_pylist() for column in batch.columns]
            lite.executemany(f"INSERT INTO messages ({MESSAGE_FIELDS}) VALUES ({marks})", zip(*columns))
    lite.execute("CREATE INDEX messages_channel ON messages (channel_id, id)")
    lite.commit()
    lite.execute("ANALYZE")
    return lite


def warm_cache(db, channels: list[int]) -> None:
    """Fill the recent-message cache of every channel in one pass, as a long-running app would have it."""
    by_channel: dict[int, list[Message]] = collections.defaultdict(list)
    with db.write_lock():  # as list_messages fills: no write lands between the read and the fill
        rows = db.rows(
            f"SELECT {MESSAGE_COLUMNS} FROM (SELECT *, row_number() OVER (PARTITION BY channel_id ORDER BY id DESC) "
            f"AS newest FROM messages) m LEFT JOIN users u ON u.id = m.author_id "
            f"WHERE m.newest <= ? ORDER BY m.channel_id, m.id DESC",
            [CACHE_DEPTH],
        )
        for row in rows:
            by_channel[row[1]].append(Message(*row))
        for channel_id in channels:
            db.recent.fill(channel_id, by_channel.get(channel_id, []))


# sending -----------------------------------------------------------------------
def time_sends(db, channel_id: int, users: list[int], threads: int, sends_each: int) -> list[int]:
    """Nanoseconds per send_message, each of ``threads`` threads sending ``sends_each`` messages."""
    samples: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        mine = []
        try:
            start.wait()
            for j in range(sends_each):
                begin = time.perf_counter_ns()
                send_message(db, channel_id, users[n % len(users)], f"bench {n}:{j}")
                mine.append(time.perf_counter_ns() - begin)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        with lock:
            samples.extend(mine)

    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return samples


# one size ----------------------------------------------------------------------
def run_size(folder: str, size: int, channel_count: int, calls: int, sends: int, thread_counts: list[int]) -> dict:
    began = time.perf_counter()
    db, users, channels = build_duckdb(os.path.join(folder, f"hot-{size}.duckdb"), size, channel_count)
    built_duckdb = time.perf_counter() - began
    lite = build_sqlite(os.path.join(folder, f"hot-{size}.sqlite"), db)
    built_sqlite = time.perf_counter() - began - built_duckdb
    print(f"built {size:,} messages over {channel_count:,} channels: DuckDB {built_duckdb:.1f} s, "
          f"SQLite {built_sqlite:.1f} s", file=sys.stderr, flush=True)

    warm_cache(db, channels)
    deques = {c: collections.deque(db.recent.get(c), maxlen=CACHE_DEPTH) for c in channels}

    def from_sqlite(channel_id: int) -> list[Message]:
        rows = lite.execute(SQLITE_QUERY, [channel_id, RECENT_LIMIT]).fetchall()
        return [Message(*row[:9], bool(row[9]), *row[10:]) for row in rows]

    methods = {
        "list_messages (cached)": lambda c: list_messages(db, c),
        "DuckDB direct (read_messages_uncached)": lambda c: read_messages_uncached(db, c),
        "SQLite, same query": from_sqlite,
        "dict of deques": lambda c: list(itertools.islice(deques[c], RECENT_LIMIT)),
    }
    rng = random.Random(size)
    for channel_id in rng.sample(channels, min(CHECK_CHANNELS, len(channels))):
        answers = {name: [m.id for m in call(channel_id)] for name, call in methods.items()}
        assert len({tuple(ids) for ids in answers.values()}) == 1, f"methods disagree on channel {channel_id}"
    for channel_id in channels:  # SQLite's pages into its cache too: every method starts warm
        from_sqlite(channel_id)

    picks = [rng.choice(channels) for _ in range(calls)]
    reads = {}
    for name, call in methods.items():
        budget = DUCKDB_BUDGET if name.startswith("DuckDB") else None
        samples = timed(call, picks, budget)
        reads[name] = (len(samples), *percentiles(samples))

    quiet = create_channel(db, "send off", reply_policy="off")
    answered = create_channel(db, "send every", reply_policy="every")
    writes = []
    for policy, channel_id in (("off", quiet), ("every", answered)):
        for threads in thread_counts:
            samples = time_sends(db, channel_id, users, threads, max(1, sends // threads))
            writes.append((policy, threads, len(samples), *percentiles(samples)))
    lite.close()
    db.close()
    return {"size": size, "channels": channel_count, "reads": reads, "writes": writes,
            "build_s": time.perf_counter() - began}


# report ------------------------------------------------------------------------
def print_tables(results: list[dict]) -> None:
    print("| messages | call | calls | p50 µs | p99 µs | p50 vs cached |")
    print("|---:|---|---:|---:|---:|---:|")
    for result in results:
        cached = result["reads"]["list_messages (cached)"][1]
        for name, (count, p50, p99) in result["reads"].items():
            print(f"| {result['size']:,} | {name} | {count:,} | {p50:,.1f} | {p99:,.1f} | {p50 / cached:,.1f}x |")
    print()
    print("| messages | call | SQLite / cached p50 | cached / dict p50 | targets (>= 2x, <= 10x) |")
    print("|---:|---|---:|---:|---|")
    for result in results:
        reads = result["reads"]
        cached = reads["list_messages (cached)"][1]
        vs_sqlite = reads["SQLite, same query"][1] / cached
        vs_dict = cached / reads["dict of deques"][1]
        met = "met" if vs_sqlite >= TARGET_VS_SQLITE and vs_dict <= TARGET_VS_DICT else "MISSED"
        print(f"| {result['size']:,} | list_messages | {vs_sqlite:,.1f}x | {vs_dict:,.1f}x | {met} |")
    print()
    print("| messages | send_message | threads | sends | p50 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    for result in results:
        for policy, threads, count, p50, p99 in result["writes"]:
            print(f"| {result['size']:,} | reply policy '{policy}' | {threads} | {count:,} | "
                  f"{p50 / 1000:,.2f} | {p99 / 1000:,.2f} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000", help="comma-separated message counts")
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5000, help="timed read calls per method and size")
    parser.add_argument("--sends", type=int, default=320, help="timed sends per policy and thread count")
    parser.add_argument("--threads", default="1,16", help="comma-separated sender thread counts")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hot-query-") as folder:
        results = [run_size(folder, size, args.channels, args.calls, args.sends, thread_counts) for size in sizes]
    print_tables(results)
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, total {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
