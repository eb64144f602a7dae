"""Failover between Responder processes on one Postgres: a SIGKILLed replica's replies go first in line on the
survivor and end within lease + one sweep + the wait for a worker + their own stream."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fake_openai import FakeOpenAI, Script

from core import chat
from core.store import connect

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replica_child.py")
LEASE = 2.0  # seconds: a sweep every 2/3 s
ANSWER = "one two three four five six seven eight nine ten"  # ~1 s at 0.1 s a word


def _respond(url: str, base_url: str, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, CHILD, url, "respond", base_url, str(workers), str(LEASE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.05)


def _running(db, proc) -> int:
    return sum(1 for (owner,) in db.rows("SELECT owner FROM ai_jobs WHERE state = 'running'")
               if owner.split(":")[1] == str(proc.pid))


def test_a_killed_replica_s_three_replies_go_before_the_ten_queued_on_the_survivor(pg_url):
    db = connect(pg_url)
    procs = []
    with FakeOpenAI(default=Script(chunks=["slow "] * 600, chunk_delay=0.1)) as slow, \
            FakeOpenAI(default=Script(text=ANSWER, chunk_delay=0.1)) as model:
        try:
            ann, room = chat.create_user(db, "Ann"), chat.create_channel(db, "failover")
            procs.append(victim := _respond(pg_url, slow.base_url, 3))
            held = [chat.send_message(db, room, ann, f"held {i}") for i in range(3)]
            orphans = [db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [m])[0] for m in held]
            _wait(lambda: all(chat.get_message(db, r).content.startswith("slow") for r in orphans), 20, "the victim")
            procs.append(survivor := _respond(pg_url, model.base_url, 2))
            busy = [chat.send_message(db, room, ann, f"busy {i}") for i in range(2 + 10)]  # 2 running, 10 queued
            _wait(lambda: _running(db, survivor) == 2, 20, "the survivor to be busy")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            killed = time.monotonic()
            _wait(lambda: all(chat.get_message(db, r).status == "complete" for r in orphans), 30, "the orphans")
            took = time.monotonic() - killed

            assert [chat.get_message(db, r).content for r in orphans] == [ANSWER] * 3
            # lease + one sweep, then at most one busy answer before a worker is free, then two rounds of answers
            # (3 orphans on 2 workers), with room for a loaded machine
            assert took < LEASE + LEASE / 3 + 3 * 1.5 + 3, f"the orphans ended {took:.1f} s after the kill"
            requeued = max(db.one("SELECT finished_at FROM ai_jobs WHERE reply_id = ? ORDER BY id LIMIT 1", [r])[0]
                           for r in orphans)
            picked = [db.one("SELECT claimed_at FROM ai_jobs WHERE reply_id = ? ORDER BY id DESC LIMIT 1", [r])[0]
                      for r in orphans]
            later = [row[0] for m in busy if (row := db.one(
                "SELECT claimed_at FROM ai_jobs WHERE trigger_id = ? AND claimed_at > ?", [m, requeued]))]
            assert later, "some of the queued replies were still waiting when the orphans were requeued"
            assert max(picked) <= min(later), "the orphans were claimed before every reply queued after them"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.stdin.close()
                    proc.wait(30)
                proc.stdout.close()
            db.close()
