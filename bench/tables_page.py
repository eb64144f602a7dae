"""How long the Tables page takes to rerun at 10k and at 1M messages (AppTest, same process).

Run: python bench/tables_page.py  (a minute or two on 2 cores). Prints a Markdown table.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from core import chat  # noqa: E402
from core import tables as t  # noqa: E402
from core.store import connect  # noqa: E402

PAGE = str(ROOT / "views" / "tables.py")
SIZES = (10_000, 1_000_000)
RUNS = 5  # reruns timed per case; the median is reported
USERS, CHANNELS = 20, 5
SPAN_SECONDS = 30 * 24 * 3600  # the messages spread over 30 days


def seed(path: str, messages: int) -> None:
    """Users, channels and ``messages`` messages: every other one an AI reply with timings, 2% of those errors."""
    db = connect(path)
    users = [chat.create_user(db, f"user{i}") for i in range(USERS)]
    channels = [chat.create_channel(db, f"channel{i}", reply_policy="off") for i in range(CHANNELS)]
    db.write(lambda tx: tx.execute(
        """INSERT INTO messages (channel_id, author_id, content, status, error, created_at, model,
                                 prompt_tokens, completion_tokens, ttft_ms, total_ms)
           SELECT ? + i % ?,
                  CASE WHEN i % 2 = 0 THEN ? + (i // 2) % ? END,
                  'message ' || i || ': the quick brown fox jumps over the lazy dog',
                  CASE WHEN i % 100 = 1 THEN 'error' ELSE 'complete' END,
                  CASE WHEN i % 100 = 1 THEN 'The AI service is down (HTTP 503).' END,
                  TIMESTAMP '2024-01-01' + to_seconds((i * ? // ?)::BIGINT),
                  CASE WHEN i % 2 = 1 THEN 'gpt-4o' END,
                  CASE WHEN i % 2 = 1 THEN 200 + i % 50 END, CASE WHEN i % 2 = 1 THEN 40 + i % 30 END,
                  CASE WHEN i % 2 = 1 THEN 300 + i % 400 END, CASE WHEN i % 2 = 1 THEN 1500 + i % 2000 END
           FROM range(?) r(i)""",
        [channels[0], CHANNELS, users[0], USERS, SPAN_SECONDS, messages, messages],
    ))
    db.close()


def timed(at: AppTest, change=None, each=None) -> float:
    """Median seconds of RUNS reruns after applying ``change`` once (and ``each`` before every run)."""
    if change is not None:
        change(at)
    at.run()
    assert not at.exception, at.exception
    seconds = []
    for _ in range(RUNS):
        if each is not None:
            each(at)
        started = time.perf_counter()
        at.run()
        seconds.append(time.perf_counter() - started)
        assert not at.exception, at.exception
    return statistics.median(seconds)


def measure(path: str) -> dict[str, float]:
    os.environ["CHAT_DB"] = path
    os.environ.pop("ADMIN_PASSWORD", None)
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    started = time.perf_counter()
    at.run()
    first = time.perf_counter() - started
    results = {"first run (opens the file)": first}
    results["browse messages, page 1"] = timed(at)
    assert len(at.dataframe[0].value) == t.DEFAULT_PAGE_SIZE  # one page reaches the page, not the table
    results["browse, text contains 'fox jumps'"] = timed(at, lambda a: a.text_input(key="filter_text").input("fox jumps"))
    results["browse, channel + AI author"] = timed(at, lambda a: (
        a.text_input(key="filter_text").input(""),
        a.selectbox(key="filter_channel").select_index(1),
        a.selectbox(key="filter_author").set_value(t.AI_AUTHOR),
    ))
    results["browse, sorted by content, page 100"] = timed(at, lambda a: (
        a.selectbox(key="filter_channel").set_value(None),
        a.selectbox(key="filter_author").set_value(None),
        a.selectbox(key="sort_messages").set_value("content"),
        a.run(),
        a.number_input(key="page_messages").set_value(100),
    ))
    results["overview, per hour"] = timed(at, lambda a: (
        a.radio(key="tables_view").set_value("Overview"), a.run(), a.radio(key="overview_bucket").set_value("hour")))
    results["console: messages per channel"] = timed(
        at, lambda a: a.radio(key="tables_view").set_value("SQL console"), each=lambda a: a.button[0].click())
    assert not at.error and len(at.dataframe[0].value) == CHANNELS
    st.cache_resource.clear()
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        warm = os.path.join(folder, "warm.duckdb")
        seed(warm, 1000)
        measure(warm)  # the first AppTest run in a process pays for imports: keep that out of the table
        found = {}
        for size in SIZES:
            path = os.path.join(folder, f"bench_{size}.duckdb")
            started = time.perf_counter()
            seed(path, size)
            print(f"seeded {size:,} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            found[size] = measure(path)
    small, large = SIZES
    print(f"| Tables page rerun (median of {RUNS}) | {small:,} messages | {large:,} messages | ratio |")
    print("|---|---:|---:|---:|")
    for case in found[small]:
        a, b = found[small][case], found[large][case]
        print(f"| {case} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {b / a:.1f}× |")


if __name__ == "__main__":
    main()
