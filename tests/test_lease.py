"""The default AI lease: a crashed replica's replies are taken over within 15 s, with the heartbeat well inside it."""
from __future__ import annotations

from core.ai import LEASE_BEATS
from core.config import DEFAULT_AI_LEASE_SECONDS, Settings, load_settings

RECOVERY_BUDGET = 15.0  # seconds from a replica's death to its replies requeued, that a person watching accepts


def test_the_default_lease_requeues_a_dead_replica_s_replies_within_15_seconds():
    lease = load_settings().ai_lease_seconds
    assert lease == Settings().ai_lease_seconds == DEFAULT_AI_LEASE_SECONDS
    beat = lease / LEASE_BEATS  # the heartbeat and the sweep (core/ai/worker.py)
    # The last renewal came at most a beat before the death, so the lease runs out within `lease` of it, and the
    # next sweep of a survivor comes at most a beat later.
    assert lease + beat <= RECOVERY_BUDGET
    assert LEASE_BEATS >= 3  # two heartbeats may fail (a slow write, a busy process) before a live reply looks dead
