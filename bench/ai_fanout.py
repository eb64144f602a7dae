"""AI fan-out: 100 replies through the Responder with 4 and 8 workers against a ~1 s fake model.

Run ``python bench/ai_fanout.py``; it prints a Markdown table. The fake OpenAI server
(tests/fake_openai.py) runs in a child process, as a real AI service would be remote.
Reports, per worker count: makespan against the ideal ceil(replies / workers) x model latency
(target <= 1.15x), text writes per reply within any 1 s of streaming (target <= 4), and the
p99 of ``list_messages`` while the pool is busy against idle (target <= 1.5x).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from core.ai import Responder  # noqa: E402
from core.chat import channel_version, create_channel, create_user, list_messages, send_message  # noqa: E402
from core.config import Settings  # noqa: E402
from core.recent import CACHE_DEPTH  # noqa: E402
from core.store import connect  # noqa: E402

CHANNELS = 10  # replies are spread over channels as in a busy app
WATCH_EVERY = 0.01  # seconds between the watcher's looks: far below the 0.25 s write interval, so no write is missed
PROBE_PAUSE = 0.0005  # seconds between list_messages probes: thousands of samples per second
RUN_LIMIT = 300  # seconds: give up on a run that never finishes


def serve(latency: float, chunk_delay: float, chunks: int) -> None:
    """Child process: run the fake server until stdin closes, then print how many requests it served."""
    from fake_openai import FakeOpenAI, Script

    script = Script(chunks=[f"word{i} " for i in range(chunks)], delay=latency, chunk_delay=chunk_delay)
    with FakeOpenAI(default=script) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()
        print(len(fake.requests), flush=True)


class Probe(threading.Thread):
    """Times list_messages (what every open page calls each second) over the channels, round robin."""

    def __init__(self, db, channels: list[int]) -> None:
        super().__init__(daemon=True)
        self.db, self.channels = db, channels
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            channel = self.channels[i % len(self.channels)]
            i += 1
            t = time.perf_counter()
            list_messages(self.db, channel, 10)
            self.samples.append(time.perf_counter() - t)
            time.sleep(PROBE_PAUSE)

    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Watcher(threading.Thread):
    """Sees every write to an AI reply through the channel versions, as a page would, and keeps its times."""

    def __init__(self, db, channels: list[int]) -> None:
        super().__init__(daemon=True)
        self.db, self.channels = db, channels
        self.streaming: dict[int, set] = {}  # reply id -> updated_at of each streaming write
        self.ended: dict[int, tuple] = {}  # reply id -> (status, updated_at)
        self.done = threading.Event()

    def run(self) -> None:
        seen = {c: -1 for c in self.channels}
        while not self.done.is_set():
            for channel in self.channels:
                version = channel_version(self.db, channel)
                if version == seen[channel]:
                    continue
                seen[channel] = version
                for m in list_messages(self.db, channel, CACHE_DEPTH):
                    if m.is_ai and m.status == "streaming":
                        self.streaming.setdefault(m.id, set()).add(m.updated_at)
                    elif m.is_ai and m.status in ("complete", "error"):
                        self.ended.setdefault(m.id, (m.status, m.updated_at))
            time.sleep(WATCH_EVERY)


def peak_per_second(times: list) -> int:
    """Most writes within any 1 s window."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if (u - t).total_seconds() < 1.0) for i, t in enumerate(times)), default=0)


def run(base_url: str, replies: int, workers: int, idle_seconds: float, model_seconds: float) -> dict:
    """One fan-out: queue ``replies`` messages, measure idle reads, then let the pool answer them all."""
    folder = tempfile.mkdtemp(prefix="ai_fanout_")
    db = connect(os.path.join(folder, "bench.duckdb"))
    try:
        users = [create_user(db, "Ann"), create_user(db, "Bob")]
        channels = [create_channel(db, f"channel-{i}") for i in range(CHANNELS)]
        for i in range(replies):
            send_message(db, channels[i % CHANNELS], users[i % 2], f"Question {i}: what do you think?")
        for channel in channels:
            list_messages(db, channel, 10)  # warm the cache, as a page that is already open

        watcher = Watcher(db, channels)
        watcher.start()
        idle = Probe(db, channels)
        idle.start()
        time.sleep(idle_seconds)
        idle.done.set()
        idle.join()

        busy = Probe(db, channels)
        settings = Settings(openai_api_key="bench-key", openai_base_url=base_url, ai_workers=workers)
        responder = Responder(db, settings)
        started = db.clock()
        busy.start()
        responder.start()
        deadline = time.monotonic() + RUN_LIMIT
        while len(watcher.ended) < replies and time.monotonic() < deadline:
            time.sleep(0.05)
        busy.done.set()
        busy.join()
        responder.stop(grace=0)
        watcher.done.set()
        watcher.join()

        ends = [at for _, at in watcher.ended.values()]
        makespan = (max(ends) - started).total_seconds() if ends else math.inf
        ideal = math.ceil(replies / workers) * model_seconds
        writes = [len(w) for w in watcher.streaming.values()]
        return {
            "workers": workers,
            "replies": replies,
            "complete": sum(1 for status, _ in watcher.ended.values() if status == "complete"),
            "makespan": makespan,
            "ideal": ideal,
            "writes_per_reply": sum(writes) / max(1, len(writes)),
            "peak_writes_per_s": max((peak_per_second(list(w)) for w in watcher.streaming.values()), default=0),
            "idle_p99_us": idle.p99() * 1e6,
            "busy_p99_us": busy.p99() * 1e6,
            "samples": (len(idle.samples), len(busy.samples)),
        }
    finally:
        db.close()


def table(rows: list[dict]) -> str:
    lines = [
        "| workers | replies | complete | makespan s | ideal s | ratio (<= 1.15) | text writes / reply "
        "| max writes in 1 s (<= 4) | list_messages p99 idle µs | busy µs | ratio (<= 1.5) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['replies']} | {r['complete']} | {r['makespan']:.2f} | {r['ideal']:.2f} "
            f"| {r['makespan'] / r['ideal']:.3f} | {r['writes_per_reply']:.1f} | {r['peak_writes_per_s']} "
            f"| {r['idle_p99_us']:.0f} | {r['busy_p99_us']:.0f} | {r['busy_p99_us'] / r['idle_p99_us']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before the first token")
    parser.add_argument("--stream", type=float, default=0.8, help="seconds the text takes to stream")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per reply")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of list_messages timing with the pool idle")
    parser.add_argument("--serve", nargs=3, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return []

    chunk_delay = args.stream / args.chunks  # the server waits this before every chunk but the first, and the finish
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", str(args.latency), str(chunk_delay), str(args.chunks)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        rows = [run(base_url, args.replies, w, args.idle, args.latency + args.stream) for w in args.workers]
        server.stdin.close()
        served = int(server.stdout.readline() or 0)
    finally:
        if server.poll() is None:
            server.stdin.close() if not server.stdin.closed else None
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    print(table(rows))
    print(
        f"\n{args.replies} replies per run, {CHANNELS} channels, model latency {args.latency:g} s + "
        f"{args.chunks} chunks over {args.stream:g} s; the fake server answered {served} requests "
        f"(expected {args.replies * len(args.workers)}). Text writes are stream_reply writes; each reply also "
        "has its claim, its request record and its final write."
    )
    return rows


if __name__ == "__main__":
    main()
