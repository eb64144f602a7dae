"""Run a Responder on a database file until killed; print "streaming" once a reply is streaming.

Usage: python tests/crash_child.py DB_PATH BASE_URL. tests/test_ai.py kills it with SIGKILL mid-reply.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.ai import Responder  # noqa: E402
from core.config import Settings  # noqa: E402
from core.store import connect  # noqa: E402

LIFETIME = 30  # seconds: never outlive a test that failed to kill this process


def main(path: str, base_url: str) -> None:
    db = connect(path)
    Responder(db, Settings(openai_api_key="test-key", openai_base_url=base_url, ai_workers=1)).start()
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        if db.one("SELECT 1 FROM messages WHERE status = 'streaming' AND content <> ''"):
            print("streaming", flush=True)
            break
        time.sleep(0.02)
    time.sleep(max(0.0, deadline - time.monotonic()))
    os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
