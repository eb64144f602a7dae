"""The AI replies, as the rest of the app uses them: the ``Responder`` and the names others import from here.

The package, one job a module:
* ``worker``: the Responder's threads: lifecycle, leases, claiming and dispatching jobs;
* ``reply``: one reply's flow: what the model is sent, rounds of tool calls, fallbacks, how it ends;
* ``stream``: one request: open the HTTP stream, retry within the deadline, read its chunks;
* ``reasons``: the words a person reads, and SDK errors (refusals told apart) translated into them;
* ``redact``: credentials kept out of messages and log records.
"""
from __future__ import annotations

from core.ai.redact import safe_url
from core.ai.worker import LEASE_BEATS, Responder

__all__ = ["LEASE_BEATS", "Responder", "safe_url"]
