"""The in-memory vector index: a float32 matrix per process, loaded once and then topped up with rows written since.

A matrix-vector product over 1M vectors takes ~40 ms where DuckDB's ``array_cosine_similarity`` over the
same rows takes ~320 ms (bench/search.py), and Postgres 15 on Debian has no pgvector package, so one
in-memory index serves both backends.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np

from core.embeddings.providers import DIMENSIONS, unit_vectors
from core.store import Database

log = logging.getLogger(__package__)  # one logger for the package: the name operators and tests filter on
LOAD_CHUNK = 100_000  # vectors per Arrow batch when the index loads
SMALL_LOAD = 2_000  # up to this many new vectors are read as plain rows; more are streamed as Arrow
SEQ_OVERLAP = 10_000  # seq numbers looked at again: writers on several replicas commit out of order


class VectorIndex:
    """One provider's vectors in memory: a float32 matrix with the message and channel of each row."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.seq = 0  # the highest message_vectors.seq loaded
        self.size = 0
        self.matrix = np.zeros((0, DIMENSIONS), dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)
        self.channels = np.zeros(0, dtype=np.int64)
        self.rows: dict[int, int] = {}  # message id -> row
        self.recent: set[int] = set()  # seq numbers loaded within SEQ_OVERLAP of the highest
        self.loaded = False  # the first load finished (until then search is keyword-only)
        self._lock = threading.Lock()

    def refresh(self, db: Database) -> int:
        """Load vectors written since the last refresh; return how many.

        Replicas may commit vectors out of ``seq`` order, so the last SEQ_OVERLAP numbers are looked at again:
        one count says whether anything arrived; only rows not yet loaded are read.
        """
        with self._lock:
            low = max(0, self.seq - SEQ_OVERLAP)
            count, top = db.one(
                "SELECT count(*), coalesce(max(seq), 0) FROM message_vectors WHERE provider = ? AND seq > ?",
                [self.provider, low],
            )
            if top <= self.seq and count == sum(1 for seq in self.recent if seq > low):
                self.loaded = True
                return 0
            if self.size == 0 and count > len(self.matrix):  # first load: one allocation (1M vectors = 1 GB)
                self._reserve(int(count))
            sql = "SELECT message_id, channel_id, seq, vector FROM message_vectors WHERE provider = ? AND seq > ?"
            known = np.fromiter(self.recent, dtype=np.int64, count=len(self.recent))
            if count <= SMALL_LOAD:
                rows = db.rows(sql, [self.provider, low])
                batches = [_arrays(rows)] if rows else []
            else:
                batches = _read_batches(db, sql, [self.provider, low])
            added, window = 0, set()
            for ids, channels, seqs, vectors in batches:
                fresh = ~np.isin(seqs, known)
                self._add(ids[fresh], channels[fresh], vectors[fresh])
                self.seq = max(self.seq, int(seqs.max()))
                floor = self.seq - SEQ_OVERLAP
                window = {seq for seq in window if seq > floor}
                window.update(seq for seq in seqs.tolist() if seq > floor)
                added += int(fresh.sum())
            self.recent = window  # exactly what the window holds now (a replaced vector's old number is gone)
            self.loaded = True
            return added

    def _add(self, ids: np.ndarray, channels: np.ndarray, vectors: np.ndarray) -> None:
        vectors = unit_vectors(vectors)
        new = []
        for i, message_id in enumerate(ids.tolist()):
            row = self.rows.get(message_id)
            if row is None:
                new.append(i)
            else:  # re-embedded: replace in place
                self.matrix[row] = vectors[i]
                self.channels[row] = channels[i]
        if not new:
            return
        need = self.size + len(new)
        if need > len(self.matrix):
            self._reserve(max(need, len(self.matrix) + len(self.matrix) // 4, 1024))  # grow by a quarter: 1 GB is copied rarely
        at = np.array(new)
        self.matrix[self.size:need] = vectors[at]
        self.ids[self.size:need] = ids[at]
        self.channels[self.size:need] = channels[at]
        for offset, message_id in enumerate(ids[at].tolist()):
            self.rows[message_id] = self.size + offset
        self.size = need

    def _reserve(self, capacity: int) -> None:
        self.matrix = _grow(self.matrix, capacity)
        self.ids = _grow(self.ids, capacity)
        self.channels = _grow(self.channels, capacity)

    def nearest(
        self,
        vector: np.ndarray,
        limit: int,
        min_similarity: float,
        channel_id: int | None = None,
        exclude: Sequence[int] = (),
        before_id: int | None = None,
        hidden: Any = None,
    ) -> list[tuple[int, float]]:
        """(message id, cosine) of the ``limit`` closest vectors at or above ``min_similarity``, none ``hidden``."""
        with self._lock:
            matrix, ids, channels = self.matrix[: self.size], self.ids[: self.size], self.channels[: self.size]
            if channel_id is not None:
                rows = np.flatnonzero(channels == channel_id)
                matrix, ids, channels = matrix[rows], ids[rows], channels[rows]
            if hidden is not None:  # who may read what: filtered before ranking, so the top holds only readable ones
                rows = np.flatnonzero((channels <= hidden.upto) & ~np.isin(channels, np.asarray(hidden.ids, np.int64)))
                matrix, ids = matrix[rows], ids[rows]
            scores = matrix @ vector.astype(np.float32)
        keep = scores >= min_similarity
        if before_id is not None:
            keep &= ids < before_id
        if len(exclude):
            keep &= ~np.isin(ids, np.asarray(list(exclude), dtype=np.int64))
        candidates = np.flatnonzero(keep)
        if len(candidates) > limit:  # keep what can make the top: scores at or above the limit-th best
            kth = np.partition(scores[candidates], len(candidates) - limit)[len(candidates) - limit]
            candidates = candidates[scores[candidates] >= kth]
        order = candidates[np.lexsort((-ids[candidates], -scores[candidates]))][:limit]  # ties: newest first
        return [(int(ids[i]), float(scores[i])) for i in order]


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _arrays(rows: Sequence[tuple]):
    """(ids, channels, seqs, vectors) arrays from rows of message_id, channel_id, seq, vector."""
    return (
        np.array([row[0] for row in rows], dtype=np.int64),
        np.array([row[1] for row in rows], dtype=np.int64),
        np.array([row[2] for row in rows], dtype=np.int64),
        np.array([row[3] for row in rows], dtype=np.float32).reshape(-1, DIMENSIONS),
    )


def _read_batches(db: Database, sql: str, params: list[Any]):
    """Stream a bulk read as Arrow batches through DuckDB (Postgres attached read-only), one pass, no sort."""
    with db.analytics() as cur:
        reader = cur.execute(sql, params).to_arrow_reader(LOAD_CHUNK)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            vectors = batch.column(3).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            yield (
                batch.column(0).to_numpy().astype(np.int64),
                batch.column(1).to_numpy().astype(np.int64),
                batch.column(2).to_numpy().astype(np.int64),
                vectors.reshape(-1, DIMENSIONS),
            )


# what search reads ---------------------------------------------------------------
