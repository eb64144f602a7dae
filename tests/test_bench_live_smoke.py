"""bench/live.py on a tiny case, so the benchmark keeps working (its figures live in the README)."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

pytestmark = pytest.mark.browser


def test_live_bench_measures_one_pushed_window():
    import live

    (row,) = live.main(["--sessions", "1", "--seconds", "3", "--variants", "push", "--replies", "1", "--plot", ""])
    assert row["lost"] == 0 and row["ai_lost"] == 0  # every message typed in the sender window was stored
    assert row["samples"] >= 2 and row["missed"] == 0 and row["ai_missed"] == 0  # and reached the other window
    assert 0 < row["p50"] <= row["p95"] <= row["max"] < 10_000  # ms, send to visible
    assert 0 < row["ai_p50"] < 10_000  # ms, the model's first token to visible
    assert math.isfinite(row["cpu_pct_per_session"]) and row["cpu_pct_per_session"] >= 0
    assert row["tcp_per_window"] >= 2  # Streamlit's WebSocket and the push listener's
    assert 0 < row["echo_p50"] <= row["confirmed_p50"] < 10_000  # the sender's line: drawn at Enter, then stored
    assert math.isfinite(row["active_pct_per_watcher"]) and row["active_pct_per_watcher"] >= 0
