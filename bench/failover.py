"""Failover across replicas: how long a SIGKILLed replica's replies take to end on the survivor, and the lease's cost.

Run: python bench/failover.py [--leases 10,4] [--queued 0,10,30] [--rounds 3] [--heartbeat-leases 4,10,30]

A throwaway Postgres server (tests/pgserver.py) holds the chat; the replicas are Responder processes
(tests/replica_child.py, 4 workers each), each talking to the local OpenAI test server (tests/fake_openai.py).
- failover, for each lease and queue depth, ROUNDS times: a victim replica streams HELD replies slowly (they
  never end by themselves); a survivor starts, is kept busy with 4 replies and Q more queued behind them (Q = 0:
  the survivor is idle); at a random moment of the heartbeat's period the victim is SIGKILLed. Reported per
  orphaned reply, from the kill: requeued (the sweep retired its job: the old job's finished_at), claimed again
  (the survivor took the new attempt, whose first word follows at once: its claimed_at) and complete (the reply's final write), p50/p95/max over
  all rounds; and how often the bench, looking every 50 ms, saw an orphan without text (its text is kept while it
  waits: it should never be). Replies are ~3 s answers streamed a word every 0.25 s, the survivor's busy ones too.
- heartbeat: 10 replicas x 4 workers each hold 4 slowly streaming replies; with ``log_statement = 'all'`` for a
  while, the server's log counts the lease-renewal UPDATEs and the sweeps each replica sent, per second.
Prints two Markdown tables.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_openai import FakeOpenAI, Script  # noqa: E402
from pgserver import PostgresServer  # noqa: E402

from core import chat  # noqa: E402
from core.ai import LEASE_BEATS  # noqa: E402
from core.config import DEFAULT_AI_LEASE_SECONDS  # noqa: E402
from core.store import connect  # noqa: E402
from core.store.base import utcnow  # noqa: E402

CHILD = ROOT / "tests" / "replica_child.py"
WORKERS = 4  # AI_WORKERS' default: replies one replica streams at once
HELD = 4  # replies the victim holds mid-stream when it is killed (all its workers)
ANSWER = " ".join(f"word{i}" for i in range(12))  # the survivor's answers: 12 words ...
ANSWER_DELAY = 0.25  # ... a word every 0.25 s: ~3 s each, the busy ones and the picked-up ones
SLOW = Script(chunks=["slow "] * 2000, chunk_delay=0.25)  # the victim's streams: far longer than any round
LOOK_EVERY = 0.05  # seconds between the bench's looks at the orphans
ROUND_LIMIT = 90.0  # seconds: give up on a round whose orphans never end
REPLICAS = 10  # heartbeat case: replicas ...
HEARTBEAT_WINDOW = 20.0  # ... and at least this many seconds of log (at least two heartbeats at long leases)
RENEWAL = "UPDATE ai_jobs SET lease_until"  # the heartbeat's statement (core/jobs.py renew_leases)
SWEEP = "FROM ai_jobs j LEFT JOIN messages m"  # the sweep's look for expired leases (recover_interrupted)
STREAM_WRITE = "UPDATE messages SET content"  # a reply's text write, for scale


def child(url: str, base_url: str, lease: float) -> subprocess.Popen:
    """A Responder process (tests/replica_child.py), returned once it says it is ready."""
    proc = subprocess.Popen([sys.executable, str(CHILD), url, "respond", base_url, str(WORKERS), str(lease)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"a replica did not start (it said {line!r})")
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Let a replica stop by itself (its stdin closes), or kill it."""
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g} s for {what}")
        time.sleep(LOOK_EVERY)
    return value


def running_of(db, pid: int) -> int:
    """How many running jobs the process ``pid`` holds (its owner is hostname:pid:random)."""
    return sum(1 for (owner,) in db.rows("SELECT owner FROM ai_jobs WHERE state = 'running'")
               if owner and owner.split(":")[1] == str(pid))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# failover ------------------------------------------------------------------------------------------------
def failover_round(url: str, slow, model, lease: float, queued: int, rng: random.Random) -> dict:
    """One kill: the victim's orphans' times from the kill, in seconds, and how often one was seen without text."""
    db = connect(url)
    procs = []
    try:
        ann, room = chat.create_user(db, "Ann"), chat.create_channel(db, "failover")
        victim = child(url, slow.base_url, lease)
        procs.append(victim)
        held = [chat.send_message(db, room, ann, f"held {i}") for i in range(HELD)]
        replies = [db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [m])[0] for m in held]
        wait_until(lambda: all(chat.get_message(db, r).content.startswith("slow") for r in replies), 30,
                   "the victim to stream its replies")
        procs.append(survivor := child(url, model.base_url, lease))
        if queued:
            for i in range(WORKERS + queued):
                chat.send_message(db, room, ann, f"busy {i}")
            wait_until(lambda: running_of(db, survivor.pid) == WORKERS, 30, "the survivor to be busy")
        assert running_of(db, victim.pid) == HELD, "the victim holds its replies"
        time.sleep(rng.uniform(0, lease / LEASE_BEATS))  # the kill falls anywhere in the heartbeat's period
        os.kill(victim.pid, signal.SIGKILL)
        killed = utcnow()
        victim.wait()
        empty = looks = 0
        deadline = time.monotonic() + ROUND_LIMIT
        while time.monotonic() < deadline:
            rows = db.rows(f"SELECT status, content FROM messages WHERE id IN ({', '.join('?' * len(replies))})",
                           replies)
            looks += len(rows)
            empty += sum(1 for _, content in rows if not content)
            if all(status in ("complete", "error") for status, _ in rows):
                break
            time.sleep(LOOK_EVERY)
        results = []
        for reply in replies:
            message = chat.get_message(db, reply)
            jobs = db.rows("SELECT finished_at, claimed_at FROM ai_jobs WHERE reply_id = ? ORDER BY id", [reply])
            if message.status != "complete" or message.content != ANSWER or len(jobs) < 2:
                results.append(None)
                continue
            since = lambda at: (at - killed) / timedelta(seconds=1)  # noqa: E731
            results.append({"requeued": since(jobs[0][0]), "claimed": since(jobs[1][1]),
                            "complete": since(message.updated_at)})
        return {"orphans": results, "empty": empty, "looks": looks}
    finally:
        for proc in procs:
            stop(proc)
        db.close()


def failover(pg: PostgresServer, template: str, leases: list[float], depths: list[int], rounds: int) -> list[dict]:
    rows = []
    rng = random.Random(25)
    with FakeOpenAI(default=SLOW) as slow, FakeOpenAI(default=Script(text=ANSWER, chunk_delay=ANSWER_DELAY)) as model:
        for lease in leases:
            for queued in depths:
                kills = [failover_round(pg.create_database(template=template), slow, model, lease, queued, rng)
                         for _ in range(rounds)]
                orphans = [o for kill in kills for o in kill["orphans"]]
                ended = [o for o in orphans if o is not None]
                rows.append({"lease": lease, "queued": queued, "orphans": len(orphans), "ended": len(ended),
                             "empty": sum(k["empty"] for k in kills), "looks": sum(k["looks"] for k in kills),
                             **{key: [o[key] for o in ended] for key in ("requeued", "claimed", "complete")}})
                print(f"failover, lease {lease:g} s, {queued} queued: done", file=sys.stderr, flush=True)
    return rows


# heartbeat -----------------------------------------------------------------------------------------------
def log_statements(pg: PostgresServer, on: bool) -> None:
    """Have the server log every statement (``log_statement = 'all'``), or stop; sessions take it at once."""
    with contextlib.closing(connect_admin(pg)) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'" if on else "ALTER SYSTEM RESET log_statement")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the reload reaches every backend


def connect_admin(pg: PostgresServer):
    import psycopg

    return psycopg.connect(pg.url(), autocommit=True)


def heartbeat(pg: PostgresServer, template: str, lease: float, replicas: int, window: float) -> dict:
    """Lease renewals and sweeps per second per replica while ``replicas`` x WORKERS replies stream."""
    window = max(window, 2 * lease)
    url = pg.create_database(template=template)
    db = connect(url)
    procs = []
    log = Path(pg.root) / "server.log"
    try:
        with FakeOpenAI(default=Script(chunks=["slow "] * 400, chunk_delay=1.0)) as slow:
            ann, room = chat.create_user(db, "Ann"), chat.create_channel(db, "heartbeat")
            procs += [child(url, slow.base_url, lease) for _ in range(replicas)]
            for i in range(replicas * WORKERS):
                chat.send_message(db, room, ann, f"long {i}")
            wait_until(lambda: db.one("SELECT count(*) FROM ai_jobs WHERE state = 'running'")[0] == replicas * WORKERS,
                       60, "every worker to hold a reply")
            owners = db.one("SELECT count(DISTINCT owner) FROM ai_jobs WHERE state = 'running'")[0]
            log_statements(pg, True)
            start, began = log.stat().st_size, time.monotonic()
            time.sleep(window)
            end, seconds = log.stat().st_size, time.monotonic() - began
            log_statements(pg, False)
            with open(log, "rb") as f:
                f.seek(start)
                text = f.read(end - start).decode(errors="replace")
            for proc in procs:  # before the model server goes: their streams end by stop(), not by a cut
                stop(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop(proc)
        db.close()
    count = lambda what: sum(what in line for line in text.splitlines())  # noqa: E731
    per = replicas * seconds
    return {"lease": lease, "replicas": replicas, "owners": owners, "seconds": seconds,
            "renewals": count(RENEWAL) / per, "sweeps": count(SWEEP) / per, "writes": count(STREAM_WRITE) / per}


# tables --------------------------------------------------------------------------------------------------
def failover_table(rows: list[dict]) -> str:
    lines = ["| lease s | queued behind | orphaned replies | kill → requeued p50 / p95 / max s "
             "| kill → claimed again p50 / p95 s | kill → complete p50 / p95 / max s | seen without text "
             "| target: requeued ≤ 15 s |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        q, w, c = r["requeued"], r["claimed"], r["complete"]
        met = "met" if q and max(q) <= 15 else "MISSED"
        lines.append(f"| {r['lease']:g} | {r['queued']} | {r['ended']}/{r['orphans']} "
                     f"| {percentile(q, .5):.1f} / {percentile(q, .95):.1f} / {max(q, default=float('nan')):.1f} "
                     f"| {percentile(w, .5):.1f} / {percentile(w, .95):.1f} "
                     f"| {percentile(c, .5):.1f} / {percentile(c, .95):.1f} / {max(c, default=float('nan')):.1f} "
                     f"| {r['empty']} of {r['looks']} looks | {met} |")
    return "\n".join(lines)


def heartbeat_table(rows: list[dict]) -> str:
    lines = [f"| lease s | heartbeat every s | replicas × workers | lease-renewal UPDATEs / s per replica "
             f"(measured; 1 / heartbeat) | rows renewed / s per replica | sweeps / s per replica "
             f"| reply text writes / s per replica, for scale | worst kill → requeue s (lease + heartbeat) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        beat = r["lease"] / LEASE_BEATS
        lines.append(f"| {r['lease']:g} | {beat:.2f} | {r['replicas']} × {WORKERS} "
                     f"| {r['renewals']:.3f} ({1 / beat:.3f}) | {r['renewals'] * WORKERS:.2f} | {r['sweeps']:.3f} "
                     f"| {r['writes']:.2f} | {r['lease'] + beat:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", default=f"{DEFAULT_AI_LEASE_SECONDS:g},4", help="failover: lease seconds")
    parser.add_argument("--queued", default="0,10,30", help="failover: replies queued behind on the survivor")
    parser.add_argument("--rounds", type=int, default=3, help=f"failover: kills per case ({HELD} orphans each)")
    parser.add_argument("--heartbeat-leases", default=f"4,{DEFAULT_AI_LEASE_SECONDS:g},30")
    parser.add_argument("--replicas", type=int, default=REPLICAS, help="heartbeat: replica processes")
    parser.add_argument("--window", type=float, default=HEARTBEAT_WINDOW, help="heartbeat: least seconds of log")
    args = parser.parse_args(argv)
    began = time.monotonic()
    pg = PostgresServer().start()
    try:
        template = pg.create_database()
        connect(template).close()  # migrated once; every case's database is a copy
        template = template.rsplit("/", 1)[1]
        beats = []
        for lease in args.heartbeat_leases.split(","):
            beats.append(heartbeat(pg, template, float(lease), args.replicas, args.window))
            print(f"heartbeat, lease {lease} s: done", file=sys.stderr, flush=True)
        rows = failover(pg, template, [float(x) for x in args.leases.split(",")],
                        [int(x) for x in args.queued.split(",")], args.rounds)
    finally:
        pg.cleanup()
    print(failover_table(rows))
    print()
    print(heartbeat_table(beats))
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (1 minute) on {os.cpu_count()} cores; "
          f"the whole run took {time.monotonic() - began:.0f} s.")
    return rows, beats


if __name__ == "__main__":
    main()
