"""bench/retrieval.py runs end to end on a small history (the full run is `python bench/retrieval.py`)."""
from __future__ import annotations

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "retrieval.py")


def test_retrieval_bench_prints_recall_for_every_method(capsys):
    spec = importlib.util.spec_from_file_location("retrieval", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    result = bench.main(["--facts", "2", "--filler", "4"])

    assert result["questions"] == 8
    assert all(0 <= result[m] <= 1 for m in ("keyword", "semantic", "combined", "reply path"))
    out = capsys.readouterr().out
    assert out.startswith("| recall@5 (8 questions,")
    assert "| reply path |" in out
