"""bench/search.py runs end to end on a tiny load (the full run is `python bench/search.py`)."""
from __future__ import annotations

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "search.py")


def test_search_bench_prints_its_tables(capsys):
    spec = importlib.util.spec_from_file_location("search_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    (result,) = bench.main(["--quick"])

    assert (result["backend"], result["size"], result["loaded"]) == ("duckdb", 2000, 2000)
    assert list(result["rows"]) == ["keyword", "keyword, one channel", "keyword, as a reader", "semantic",
                                    "semantic, one channel", "combined", "combined, one channel",
                                    "combined, as a reader"]
    assert all(0 < p50 <= p95 and 0 <= cpu50 <= cpu95 for p50, p95, cpu50, cpu95 in result["rows"].values())
    assert result["fts"]["build_s"] > 0 and 0 < result["fts"]["fts"][0] and 0 < result["fts"]["scan"][0]
    out = capsys.readouterr().out
    assert out.startswith("Machine load while measuring:")
    assert "| backend | messages | search | p50 ms | p95 ms | p95 <= 150 ms | CPU p50 ms | CPU p95 ms |" in out
    assert "| duckdb | 2,000 | combined |" in out
    assert "| duckdb |" in out.split("wordllama alone, texts/s")[1]
