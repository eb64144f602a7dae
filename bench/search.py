"""Search latency at 100k and 1M messages on DuckDB and Postgres, and embedding throughput.

Run ``python bench/search.py`` (``--sizes 100000,1000000 --backends duckdb,postgres``); it prints Markdown
tables. ``--quick`` runs a tiny DuckDB-only load in seconds (the smoke test does). For each size and
backend it fills a fresh database (users and channels through the verbs, messages bulk-loaded: words
from a Zipf-distributed vocabulary, 5-25 per message, over 200 channels; one random unit vector per
message stored in ``message_vectors`` as the Embedder would), then times over a fixed set of queries
(common, mid and rare words, two words, a phrase), across all channels and within one channel:

- keyword: ``search_messages`` with no embeddings attached (keyword only);
- semantic: ``embeddings.nearest`` (embeds the query with wordllama, tops up the in-memory index, ranks);
- combined: ``search_messages`` with the provider attached (both, fused);
- "as a reader": the same, as a person who reads the public channels and 20 private ones, while 40 of the 200
  channels are private (core.membership's filter inside the ranking queries and the index).

It also reports how long the vector index takes to load, DuckDB's fts extension against the scan the
app uses (DuckDB only), and embedding throughput: wordllama alone, and the Embedder's whole loop
(discover, claim, embed, store) on fresh messages. Target: p95 <= 150 ms at 1M messages.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from core import chat, embeddings, membership, search  # noqa: E402
from core.embeddings import DIMENSIONS, Embedder, local_provider  # noqa: E402
from core.store import connect  # noqa: E402

CHANNELS = 200  # channels the messages are spread over
PRIVATE, MEMBER_OF = 40, 20  # of them private, and how many of those the reading person belongs to
WORDS = 6000  # vocabulary size; word k appears with probability ~ 1/k (Zipf)
COMMON = ("deploy", "friday", "database", "release", "meeting", "lunch", "postgres", "bug", "review", "coffee")
TARGET_P95_MS = 150.0
THROUGHPUT_TEXTS = 20_000  # texts wordllama embeds in the throughput run
PIPELINE_MESSAGES = 5_000  # fresh messages the Embedder's loop handles in the throughput run


def vocabulary(seed: int = 7) -> list[str]:
    """Real words first (they take the frequent ranks), then pronounceable made-up ones."""
    rng = np.random.default_rng(seed)
    consonants, vowels = list("bcdfghklmnprstvz"), list("aeiou")
    words = list(COMMON)
    while len(words) < WORDS:
        size = int(rng.integers(2, 5))
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(size))
        if word not in words:
            words.append(word)
    return words


def messages_text(count: int, words: list[str], seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    lengths = rng.integers(5, 26, count)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=weights)
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(words[i] for i in picks[at:at + length]))
        at += length
    return out


def queries(words: list[str]) -> list[str]:
    """Common, mid-frequency and rare words, two words, and a phrase: what people type."""
    return [words[0], words[3], words[60], words[600], words[4000], f"{words[1]} {words[2]}",
            f"{words[5]} {words[300]}", f"{words[0]} {words[1]} {words[8]}", "release notes", "zzqx"]


# filling a database ------------------------------------------------------------
def fill(db, size: int, words: list[str], pg_url: str | None) -> list[int]:
    """Users, channels, ``size`` messages and a vector per message; returns the channel ids."""
    users = [chat.create_user(db, f"user{i}") for i in range(20)]
    channels = [chat.create_channel(db, f"channel{i}", reply_policy="off") for i in range(CHANNELS)]
    texts = messages_text(size, words)
    rng = np.random.default_rng(3)
    channel_of = np.array(channels)[rng.integers(0, len(channels), size)]
    author_of = np.array(users)[rng.integers(0, len(users), size)]
    name = local_provider().name
    if pg_url is None:
        import pyarrow as pa

        vectors = rng.standard_normal((size, DIMENSIONS), dtype=np.float32)
        table = pa.table({
            "channel_id": channel_of, "author_id": author_of, "content": texts,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIMENSIONS),
        })

        def load(tx):
            tx.cursor.register("bulk", table)
            tx.execute(
                "INSERT INTO messages (channel_id, author_id, content, status, created_at, updated_at) "
                "SELECT channel_id, author_id, content, 'complete', now()::TIMESTAMP, now()::TIMESTAMP FROM bulk"
            )
            tx.execute(
                "INSERT INTO message_vectors SELECT m.id, m.channel_id, ?, m.id, b.vector::FLOAT[256], now()::TIMESTAMP "
                "FROM (SELECT *, row_number() OVER () AS n FROM bulk) b "
                "JOIN (SELECT id, channel_id, row_number() OVER (ORDER BY id) AS n FROM messages) m USING (n)",
                [name],
            )

        db.write(load)
    else:
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            with conn.cursor().copy(
                "COPY messages (channel_id, author_id, content, status, created_at, updated_at) FROM STDIN"
            ) as copy:
                for channel_id, author_id, text in zip(channel_of.tolist(), author_of.tolist(), texts):
                    copy.write_row((channel_id, author_id, text, "complete", "2026-01-01", "2026-01-01"))
            conn.execute(
                "INSERT INTO message_vectors SELECT m.id, m.channel_id, %s, m.id, "
                "ARRAY(SELECT random()::real - 0.5 + 0 * m.id FROM generate_series(1, 256)), now() FROM messages m",
                [name],
            )
            conn.execute("SELECT setval('message_vectors_seq', (SELECT max(id) FROM messages))")
            conn.execute("VACUUM ANALYZE messages")
            conn.execute("VACUUM ANALYZE message_vectors")
    top = db.one("SELECT max(id) FROM messages")[0]

    def done(tx):
        for key, value in ((f"scanned:{name}", str(top)), ("active_provider", name)):
            tx.execute("INSERT INTO search_state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                       [key, value])

    db.write(done)
    return channels


# timing -------------------------------------------------------------------------
def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def timed(call, items, rounds: int) -> tuple[float, float, float, float]:
    """Wall-clock p50/p95 ms, and this process's CPU p50/p95 ms (all its threads: DuckDB's work, not Postgres's).

    The CPU figures hold still when other programs load the machine; wall-clock ones do not.
    """
    call(items[0])  # warm: first use loads what later calls reuse
    wall, cpu = [], []
    for _ in range(rounds):
        for item in items:
            started, spent = time.perf_counter(), time.process_time()
            call(item)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - spent) * 1000)
    return (*percentiles(wall), *percentiles(cpu))


def measure(db, backend: str, size: int, words: list[str], rounds: int, pg_url: str | None) -> dict:
    started = time.perf_counter()
    channels = fill(db, size, words, pg_url)
    fill_s = time.perf_counter() - started
    asked = queries(words)
    channel = channels[0]
    rows = {}
    embeddings.detach(db)
    rows["keyword"] = timed(lambda q: search.search_messages(db, q), asked, rounds)
    rows["keyword, one channel"] = timed(lambda q: search.search_messages(db, q, channel_id=channel), asked, rounds)
    reader = make_private(db, channels)
    rows["keyword, as a reader"] = timed(lambda q: search.search_messages(db, q, reader=reader), asked, rounds)
    embeddings.attach(db, local_provider())
    started = time.perf_counter()
    loaded = embeddings.attached_index(db).refresh(db)
    load_s = time.perf_counter() - started
    rows["semantic"] = timed(lambda q: embeddings.nearest(db, q), asked, rounds)
    rows["semantic, one channel"] = timed(lambda q: embeddings.nearest(db, q, channel_id=channel), asked, rounds)
    rows["combined"] = timed(lambda q: search.search_messages(db, q), asked, rounds)
    rows["combined, one channel"] = timed(lambda q: search.search_messages(db, q, channel_id=channel), asked, rounds)
    rows["combined, as a reader"] = timed(lambda q: search.search_messages(db, q, reader=reader), asked, rounds)
    result = {"backend": backend, "size": size, "fill_s": fill_s, "load_s": load_s, "loaded": loaded, "rows": rows}
    if backend == "duckdb":
        result["fts"] = duckdb_fts(db, asked, rounds)
    embeddings.detach(db)
    return result


def make_private(db, channels: list[int]) -> int:
    """Turn PRIVATE of the channels private, a person a member of MEMBER_OF of them; return that person's id."""
    reader = chat.create_user(db, "reader")
    closed = channels[-PRIVATE:]

    def work(tx):
        tx.execute("UPDATE channels SET kind = 'private' WHERE id = ANY(?)", [closed])
        for channel_id in closed[:MEMBER_OF]:
            tx.execute("INSERT INTO memberships (channel_id, user_id, role, joined_at) VALUES (?, ?, 'member', ?)",
                       [channel_id, reader, db.clock()])

    db.write(work)
    assert membership.can_read(db, reader, closed[0]) and not membership.can_read(db, reader, closed[-1])
    return reader


def duckdb_fts(db, asked: list[str], rounds: int) -> dict:
    """DuckDB's fts extension (BM25, all words required) against the scan the app uses, same queries."""
    import duckdb
    import duckdb_extension_fts

    path = os.path.join(os.path.dirname(duckdb_extension_fts.__file__), "extensions", f"v{duckdb.__version__}",
                        "fts.duckdb_extension")
    out = {}
    # The app's connection may not load extensions from files: the text goes into a scratch database.
    scratch = duckdb.connect()
    try:
        scratch.execute(f"LOAD '{path}'")
    except duckdb.Error as error:
        return {"error": str(error)}
    with db.analytics() as cur:
        table = cur.execute("SELECT id, channel_id, content FROM messages").to_arrow_table()
    scratch.register("src", table)
    scratch.execute("CREATE TABLE messages AS SELECT * FROM src")
    started = time.perf_counter()
    scratch.execute("PRAGMA create_fts_index('messages', 'id', 'content', stemmer='none', stopwords='none')")
    out["build_s"] = time.perf_counter() - started
    fts_sql = ("SELECT id FROM (SELECT id, fts_main_messages.match_bm25(id, ?, conjunctive := 1) AS score FROM messages) "
               "WHERE score IS NOT NULL ORDER BY score DESC LIMIT 20")
    out["fts"] = timed(lambda q: scratch.execute(fts_sql, [q]).fetchall(), asked, rounds)
    terms = lambda q: q.split()  # noqa: E731
    scan_sql = lambda q: ("SELECT id FROM messages WHERE " + " AND ".join(  # noqa: E731
        ["strpos(lower(content), lower(?)) > 0"] * len(terms(q))) + " ORDER BY id DESC LIMIT 20")
    out["scan"] = timed(lambda q: scratch.execute(scan_sql(q), terms(q)).fetchall(), asked, rounds)
    scratch.close()
    return out


def throughput(db, texts: list[str]) -> dict:
    provider = local_provider()
    sample = texts[:THROUGHPUT_TEXTS]
    provider.embed(sample[:100])
    started = time.perf_counter()
    for at in range(0, len(sample), 256):
        provider.embed(sample[at:at + 256])
    raw = len(sample) / (time.perf_counter() - started)
    ann = chat.create_user(db, "bench")
    channel = chat.create_channel(db, "bench", reply_policy="off")
    pipeline = texts[:PIPELINE_MESSAGES]
    for text in pipeline:
        chat.send_message(db, channel, ann, text)
    embedder = Embedder(db, provider, batch=256)
    started = time.perf_counter()
    while embedder.run_once():
        pass
    loop = embedder.embedded / (time.perf_counter() - started)
    return {"raw": raw, "loop": loop, "embedded": embedder.embedded}


# running ------------------------------------------------------------------------
def open_db(backend: str, folder: str, server, size: int, pg_url: str | None):
    if backend == "duckdb":
        return connect(os.path.join(folder, f"search-{size}.duckdb")), None
    url = server.create_database() if server is not None else pg_url
    return connect(url), url


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="duckdb,postgres")
    parser.add_argument("--rounds", type=int, default=3, help="times each query is asked")
    parser.add_argument("--pg-url", help="an empty Postgres database to use instead of starting a server")
    parser.add_argument("--quick", action="store_true", help="2,000 messages on DuckDB, one round: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.backends, args.rounds = "2000", args.backends if args.pg_url else "duckdb", 1
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    words = vocabulary()
    results, rates = [], {}
    server = None
    if "postgres" in backends and not args.pg_url:
        from pgserver import PostgresServer

        server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            for backend in backends:
                for size in sizes:
                    db, url = open_db(backend, folder, server, size, args.pg_url)
                    try:
                        results.append(measure(db, backend, size, words, args.rounds, url))
                    finally:
                        db.close()
                if args.pg_url and backend == "postgres":
                    continue  # the given database is full now: throughput needs an empty one
                db, _ = open_db(backend, folder, server, 0, args.pg_url)
                try:
                    rates[backend] = throughput(db, messages_text(500 if args.quick else THROUGHPUT_TEXTS, words, seed=9))
                finally:
                    db.close()
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
    report(results, rates)
    return results


def report(results: list[dict], rates: dict) -> None:
    print(f"Machine load while measuring: {os.getloadavg()[0]:.1f} (1-minute average) on {os.cpu_count()} cores.")
    print()
    print("| backend | messages | search | p50 ms | p95 ms | p95 <= 150 ms | CPU p50 ms | CPU p95 ms |")
    print("|---|---:|---|---:|---:|---|---:|---:|")
    for result in results:
        for name, (p50, p95, cpu50, cpu95) in result["rows"].items():
            met = "met" if p95 <= TARGET_P95_MS else "missed"
            print(f"| {result['backend']} | {result['size']:,} | {name} | {p50:.1f} | {p95:.1f} | {met} | "
                  f"{cpu50:.1f} | {cpu95:.1f} |")
    print()
    print("| backend | messages | bulk fill s | vector index load s | vectors |")
    print("|---|---:|---:|---:|---:|")
    for result in results:
        print(f"| {result['backend']} | {result['size']:,} | {result['fill_s']:.1f} | {result['load_s']:.2f} | {result['loaded']:,} |")
    fts = [r for r in results if "fts" in r and "error" not in r["fts"]]
    if fts:
        print()
        print("| messages | DuckDB fts index build s | fts (BM25) p50 / p95 ms | scan (strpos) p50 / p95 ms | CPU p50 ms fts / scan |")
        print("|---:|---:|---:|---:|---:|")
        for r in fts:
            f = r["fts"]
            print(f"| {r['size']:,} | {f['build_s']:.1f} | {f['fts'][0]:.1f} / {f['fts'][1]:.1f} | "
                  f"{f['scan'][0]:.1f} / {f['scan'][1]:.1f} | {f['fts'][2]:.1f} / {f['scan'][2]:.1f} |")
    if rates:
        print()
        print("| backend | wordllama alone, texts/s | Embedder loop (discover, claim, embed, store), messages/s |")
        print("|---|---:|---:|")
        for backend, rate in rates.items():
            print(f"| {backend} | {rate['raw']:,.0f} | {rate['loop']:,.0f} |")


if __name__ == "__main__":
    main()
