"""bench/failover.py runs end to end on a tiny load (the full run is `python bench/failover.py`)."""
from __future__ import annotations

import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "failover.py")


def test_failover_bench_prints_its_tables(capsys, pg_server):  # pg_server: skips where Postgres is missing
    spec = importlib.util.spec_from_file_location("failover", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    rows, beats = bench.main(["--leases", "2", "--queued", "0", "--rounds", "1", "--heartbeat-leases", "2",
                              "--replicas", "2", "--window", "3"])

    assert [(r["lease"], r["queued"], r["orphans"], r["ended"], r["empty"]) for r in rows] == [(2.0, 0, 4, 4, 0)]
    assert all(0 < t < 2 * 2 + 5 for t in rows[0]["complete"])  # lease + heartbeat + the answer, with room
    assert beats[0]["owners"] == 2 and beats[0]["renewals"] == pytest.approx(1.5, rel=0.5)  # one every 2/3 s
    out = capsys.readouterr().out
    assert out.startswith("| lease s | queued behind |")
    assert "| lease s | heartbeat every s |" in out
