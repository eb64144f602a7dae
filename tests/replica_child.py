"""A second process of the app on the same Postgres database, for tests/test_replicas.py.

Usage:
  python tests/replica_child.py URL send TAG THREADS SENDS CHANNEL_ID USER_ID
      THREADS threads each send SENDS messages "TAG-t<thread>-<n>" in order; prints "done".
  python tests/replica_child.py URL respond BASE_URL WORKERS LEASE_SECONDS
      runs a Responder; prints "ready"; stops when standard input closes (or after LIFETIME).
"""
from __future__ import annotations

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import chat  # noqa: E402
from core.ai import Responder  # noqa: E402
from core.config import Settings  # noqa: E402
from core.store import connect  # noqa: E402

LIFETIME = 120  # seconds: never outlive a test that failed to stop this process


def send(url: str, tag: str, threads: int, sends: int, channel_id: int, user_id: int) -> None:
    db = connect(url)
    start = threading.Barrier(threads)

    def sender(n: int) -> None:
        start.wait()
        for j in range(sends):
            chat.send_message(db, channel_id, user_id, f"{tag}-t{n}-{j}")

    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    db.close()
    print("done", flush=True)


def respond(url: str, base_url: str, workers: int, lease: float) -> None:
    db = connect(url)
    settings = Settings(openai_api_key="test-key", openai_base_url=base_url, ai_workers=workers, ai_lease_seconds=lease)
    responder = Responder(db, settings).start()
    print("ready", flush=True)
    watcher = threading.Thread(target=sys.stdin.read, daemon=True)
    watcher.start()
    watcher.join(LIFETIME)
    responder.stop(grace=0)
    db.close()


if __name__ == "__main__":
    url, mode, *args = sys.argv[1:]
    if mode == "send":
        send(url, args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    else:
        respond(url, args[0], int(args[1]), float(args[2]))
