"""Message embeddings: every finished message gets a 256-dimension vector that semantic search reads.

Vectors are computed by an ``Embedder`` thread (``worker``), never on the send path, from rows of a job
queue (``jobs``) with a provider (``providers``: OpenAI's embeddings API, else local wordllama), and
searched in memory (``index``). This package re-exports the names the rest of the app uses; a tunable
(``ERROR_PAUSE``, ``LEASE_SECONDS``...) is read, and patched, in the module that uses it.
"""
from __future__ import annotations

from core.embeddings.index import (
    attach,
    attached_index,
    detach,
    fall_back,
    fallback_reason,
    nearest,
    paid_queries,
    semantic_ready,
    status,
)
from core.embeddings.jobs import (
    MAX_ATTEMPTS,
    activate_if_done,
    active_provider,
    backlog,
    claim,
    discover,
    release,
    requeue_changed,
    requeue_running,
    store,
)
from core.embeddings.providers import (
    DIMENSIONS,
    EMBED_CHARS,
    LOCAL_MODEL,
    OpenAIProvider,
    Provider,
    WordLlamaProvider,
    embed_recorded,
    endpoint_missing,
    local_provider,
    provider_for,
)
from core.embeddings.vectors import VectorIndex
from core.embeddings.worker import ERROR_PAUSE_MAX, Embedder, pause_after

__all__ = [
    "DIMENSIONS", "EMBED_CHARS", "ERROR_PAUSE_MAX", "LOCAL_MODEL", "MAX_ATTEMPTS", "Embedder", "OpenAIProvider",
    "Provider", "VectorIndex", "WordLlamaProvider", "activate_if_done", "active_provider", "attach",
    "attached_index", "backlog", "claim", "detach", "discover", "embed_recorded", "endpoint_missing", "fall_back", "fallback_reason",
    "local_provider", "nearest", "paid_queries", "pause_after", "provider_for", "release", "requeue_changed", "requeue_running",
    "semantic_ready", "status", "store",
]
