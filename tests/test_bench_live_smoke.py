"""bench/live.py on a tiny case, so the benchmark keeps working (its figures live in the README)."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

pytestmark = pytest.mark.browser


def test_live_bench_measures_one_window():
    import live

    (row,) = live.main(["--sessions", "1", "--seconds", "4", "--variants", "chat", "--plot", ""])
    assert row["lost"] == 0  # every message typed in the sender window was stored
    assert row["samples"] >= 2 and row["missed"] == 0  # every message reached the watching window
    assert 0 < row["p50"] <= row["p95"] <= row["max"] < 10_000  # ms, send to visible
    assert math.isfinite(row["cpu_pct_per_session"]) and row["cpu_pct_per_session"] >= 0
