"""bench/ai_fanout.py runs end to end on a tiny load (the full run is `python bench/ai_fanout.py`)."""
from __future__ import annotations

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "ai_fanout.py")


def test_ai_fanout_bench_prints_its_table(capsys):
    spec = importlib.util.spec_from_file_location("ai_fanout", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    rows = bench.main(["--replies", "6", "--workers", "2", "3", "--latency", "0.05", "--stream", "0.2",
                       "--chunks", "4", "--idle", "0.2"])

    assert [(r["workers"], r["replies"], r["complete"]) for r in rows] == [(2, 6, 6), (3, 6, 6)]
    assert all(r["makespan"] >= r["ideal"] * 0.9 and r["peak_writes_per_s"] <= 4 for r in rows)
    out = capsys.readouterr().out
    assert out.startswith("| workers | replies |")
    assert "the fake server answered 12 requests (expected 12)" in out
