"""Message embeddings: providers, background jobs and the vector index that semantic search reads."""
from __future__ import annotations

from typing import Sequence

from core.db import Database


def nearest(
    db: Database,
    text: str,
    channel_id: int | None = None,
    limit: int = 20,
    exclude: Sequence[int] = (),
    before_id: int | None = None,
) -> list[tuple[int, float]]:
    """(message id, cosine similarity) of the messages closest to ``text``; empty while search is keyword-only."""
    return []
