"""bench/store.py runs end to end on a tiny load, both backends side by side (the full run is `python bench/store.py`)."""
from __future__ import annotations

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "store.py")


def test_store_bench_compares_both_backends(capsys, pg_server):
    spec = importlib.util.spec_from_file_location("store_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    duck, pg = bench.main(["--messages", "500", "--sends", "16", "--calls", "50", "--pg", pg_server.create_database()])

    assert (duck["backend"], pg["backend"]) == ("DuckDB file", "Postgres")
    assert list(duck["rows"]) == list(pg["rows"])
    assert all(0 < p50 <= p99 for r in (duck, pg) for p50, p99 in r["rows"].values())
    p50, p95, worst = pg["propagation_ms"]
    assert p50 <= p95 <= worst
    out = capsys.readouterr().out
    assert "| send_message, policy 'every', 16 thread(s) |" in out
    assert "| Postgres, 100 writes |" in out
