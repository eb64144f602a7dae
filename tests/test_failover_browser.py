"""Failover as a person watching sees it: two `streamlit run` replicas on one Postgres, the one streaming a reply
SIGKILLed, the survivor picking the reply up, and a Chromium window on the survivor that never shows it empty."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from browser import INPUT, VIEWPORT, chromium, streamlit_server, wait_page
from fake_openai import FakeOpenAI, Script

from core import chat
from core.jobs import PICKING_UP
from core.store import connect

pytestmark = pytest.mark.browser

SAMPLER = (Path(__file__).parent / "reply_sampler.js").read_text()
LEASE = "2"  # AI_LEASE_SECONDS: taken over ~2-3 s after the kill (the default's 10 s would only make this slower)
ANSWER = "Picked up by the survivor and written to the end."


def _owner_pid(db, reply_id: int) -> int | None:
    row = db.one("SELECT owner FROM ai_jobs WHERE reply_id = ? AND state = 'running'", [reply_id])
    return int(row[0].split(":")[1]) if row and row[0] else None


def test_a_watcher_never_sees_the_reply_empty_while_its_replica_is_killed_and_the_survivor_picks_it_up(
        pg_url, tmp_path):
    db = connect(pg_url)
    ann = chat.create_user(db, "Ann")
    room = chat.create_channel(db, "failover")
    env = {"AI_LEASE_SECONDS": LEASE}
    with FakeOpenAI(default=Script(chunks=["slow "] * 600, chunk_delay=0.1)) as slow, \
            FakeOpenAI(default=Script(text=ANSWER, chunk_delay=0.1)) as model, \
            streamlit_server(pg_url, openai_base_url=slow.base_url, log_dir=tmp_path, extra_env=env) as victim, \
            streamlit_server(pg_url, openai_base_url=model.base_url, log_dir=tmp_path, extra_env=env) as survivor, \
            chromium() as browser:
        starter = browser.new_page(viewport=VIEWPORT)  # a page run starts the victim's AI workers ...
        starter.goto(f"{victim.url}/?channel={room}", wait_until="commit")
        starter.wait_for_selector(INPUT, timeout=30_000)
        message = chat.send_message(db, room, ann, "tell me a long story")  # ... before the survivor has any
        (reply_id,) = db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [message])

        deadline = time.monotonic() + 20
        while chat.get_message(db, reply_id).content.count("slow") < 5:
            assert time.monotonic() < deadline, "the victim never streamed the reply"
            time.sleep(0.05)
        assert _owner_pid(db, reply_id) == victim.pid

        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(SAMPLER)
        watcher = context.new_page()  # on the survivor: its page run starts the survivor's workers
        watcher.goto(f"{survivor.url}/?channel={room}", wait_until="commit")
        watcher.wait_for_selector(INPUT, timeout=30_000)
        samples = lambda: watcher.evaluate(f"window.__replySamples[{reply_id}] || []")  # noqa: E731
        wait_page(watcher, lambda _: len([s for s in samples() if "slow" in s["text"]]) >= 2, 15,
                  "the watcher to see the victim's reply grow")
        assert _owner_pid(db, reply_id) == victim.pid, "a live replica's reply is not taken over"

        os.killpg(victim.pid, signal.SIGKILL)
        victim.process.wait(10)
        killed = time.monotonic()
        wait_page(watcher, lambda _: (s := samples()) and s[-1]["status"] == "complete", 30, "the reply to end")
        took = time.monotonic() - killed
        shown = samples()
    db_reply = chat.get_message(db, reply_id)
    db.close()

    first = next(i for i, s in enumerate(shown) if s["text"])
    empty = [s for s in shown[first:] if not s["text"]]
    assert not empty, f"the watcher showed the reply without its text: {empty} (of {len(shown)} samples)"
    picking_up = [s for s in shown if PICKING_UP in s["steps"]]
    assert picking_up and all("slow" in s["text"] for s in picking_up), "the old text stays, marked, while it waits"
    assert (shown[-1]["status"], shown[-1]["text"]) == ("complete", ANSWER)
    assert (db_reply.status, db_reply.content) == ("complete", ANSWER)
    assert took < 2 * float(LEASE) + 10, f"picked up and finished {took:.1f} s after the kill"
