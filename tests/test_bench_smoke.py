"""bench/hot_query.py runs end to end on a tiny load (the full run is `python bench/hot_query.py`)."""
from __future__ import annotations

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "hot_query.py")


def test_hot_query_bench_prints_its_tables(capsys):
    spec = importlib.util.spec_from_file_location("hot_query", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    results = bench.main(["--sizes", "2000", "--channels", "10", "--calls", "200", "--sends", "8", "--threads", "1,4"])

    (result,) = results
    assert (result["size"], result["channels"]) == (2000, 10)
    assert list(result["reads"]) == [
        "list_messages (cached)", "DuckDB direct (read_messages_uncached)", "SQLite, same query", "dict of deques"
    ]
    assert all(count > 0 and 0 < p50 <= p99 for count, p50, p99 in result["reads"].values())
    assert [(policy, threads, count) for policy, threads, count, _, _ in result["writes"]] == [
        ("off", 1, 8), ("off", 4, 8), ("every", 1, 8), ("every", 4, 8)
    ]
    out = capsys.readouterr().out
    assert out.startswith("| messages | call | calls | p50 µs | p99 µs | p50 vs cached |")
    assert "| SQLite / cached p50 | cached / dict p50 |" in out
    assert "| 2,000 | reply policy 'every' | 4 | 8 |" in out
