"""Message embeddings: providers, background jobs, and the vector index that semantic search reads.

Every finished message gets a 256-dimension vector, computed by an ``Embedder`` thread and never on the
send path. The work is rows in ``embedding_jobs`` (one per message and provider): the Embedder finds new
messages past a watermark kept in ``search_state`` (``discover``), claims a batch (``claim``, with a lease),
embeds it and writes the vectors while deleting the jobs in one transaction (``store``, only if it still
holds them), so a restart or a second replica neither loses a job nor writes a vector twice.

Providers: the OpenAI embeddings API (``EMBEDDING_MODEL``, asked for 256 dimensions) when an API key is
set, else ``wordllama``, static word embeddings whose weights ship in its wheel (no network). A provider
switch re-embeds every message in the background; until every message has a vector from the configured
provider, search is keyword-only (``semantic_ready``). A server without embeddings (HTTP 404 or 405, as many
OpenAI-compatible servers answer) is told apart from one that fails for a while: it is said once (one log
line, and ``fallback_reason`` for the pages), and search falls back to wordllama (``fall_back``) until the
Embedder is started again (new settings, a restart); other failures are retried with a growing pause.

Vectors are searched in memory (``VectorIndex``: a float32 matrix per process, loaded once and then
topped up with rows written since): a matrix-vector product over 1M vectors takes ~40 ms where DuckDB's
``array_cosine_similarity`` over the same rows takes ~320 ms (bench/search.py), and Postgres 15 on Debian
has no pgvector package, so one in-memory index serves both backends.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from datetime import timedelta
from typing import Any, Protocol, Sequence

import numpy as np

from core.config import DEFAULT_EMBEDDING_MODEL
from core.deadline import hold_deadlines
from core.store import Database, Transaction

log = logging.getLogger(__name__)

DIMENSIONS = 256  # wordllama's size, and what text-embedding-3-* are asked for: one column type for both
LOCAL_MODEL = "wordllama"  # EMBEDDING_MODEL=wordllama keeps embeddings local even with an API key
EMBED_CHARS = 8000  # characters of a message that are embedded (~2k tokens, inside every model's input limit)
BATCH = 64  # messages per claim: one API request, one write
LEASE_SECONDS = 120  # a claim older than this is taken over (its worker died); a batch takes well under it
MAX_ATTEMPTS = 3  # a message the provider keeps refusing is marked failed, not retried forever
DISCOVER_CHUNK = 50_000  # message ids turned into jobs per transaction (a provider switch covers all history)
IDLE_WAIT = 1.0  # seconds the Embedder sleeps when idle and no change was announced
RECHECK_SECONDS = 60.0  # how often an idle Embedder looks for retried replies (new text) and jobs lost to errors
ERROR_PAUSE = 5.0  # seconds the Embedder waits after a provider error, doubled after each one that follows...
ERROR_PAUSE_MAX = 300.0  # ...up to this: a server that stays down is asked every 5 minutes, not every 5 s
MISSING = (404, 405)  # no such endpoint (or model), method not allowed: asking again will not make embeddings
LOAD_CHUNK = 100_000  # vectors per Arrow batch when the index loads
SMALL_LOAD = 2_000  # up to this many new vectors are read as plain rows; more are streamed as Arrow
SEQ_OVERLAP = 10_000  # seq numbers looked at again: writers on several replicas commit out of order
EMBED_TIMEOUT = 10.0  # seconds an embeddings request may take: a search embeds its query while a person waits
OPEN = ("pending", "streaming")  # AI replies still being written: embedded once finished


# providers -------------------------------------------------------------------
class Provider(Protocol):
    name: str  # stored with each vector: vectors of different providers are never compared
    min_similarity: float  # below this cosine a message is not shown as a semantic match

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, DIMENSIONS wide."""


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class WordLlamaProvider:
    """Local static embeddings (wordllama, MIT): ~20k sentences/s on one core, no network."""

    name = "wordllama/l2_supercat/256"
    min_similarity = 0.2  # measured: related sentences score 0.24-0.46, unrelated ones below 0.15

    def __init__(self) -> None:
        import wordllama

        # Its plain load() looks for the tokenizer elsewhere and tries to download: point it at its own folder.
        self._model = wordllama.WordLlama.load(
            cache_dir=os.path.dirname(wordllama.__file__), disable_download=True, dim=DIMENSIONS
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(self._model.embed([t[:EMBED_CHARS] for t in texts]))


class OpenAIProvider:
    """The OpenAI embeddings API (or a compatible server) through the openai SDK."""

    min_similarity = 0.25  # text-embedding-3: unrelated chat lines score ~0.1-0.2

    def __init__(self, client: Any, model: str = DEFAULT_EMBEDDING_MODEL) -> None:
        self.client = client
        self.model = model
        self.name = f"openai/{model}/{DIMENSIONS}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        response = self.client.embeddings.create(
            model=self.model, input=[t[:EMBED_CHARS] for t in texts], dimensions=DIMENSIONS
        )
        rows = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        if len(rows) != len(texts) or any(len(row) < DIMENSIONS for row in rows):
            raise ValueError(f"the embeddings API returned {len(rows)} vectors of the wrong size for {len(texts)} texts")
        return _unit(np.array([row[:DIMENSIONS] for row in rows], dtype=np.float32))


_wordllama: WordLlamaProvider | None = None
_wordllama_lock = threading.Lock()


def local_provider() -> WordLlamaProvider:
    """The process's wordllama model (loaded once: ~0.2 s and ~150 MB)."""
    global _wordllama
    with _wordllama_lock:
        if _wordllama is None:
            _wordllama = WordLlamaProvider()
        return _wordllama


def provider_for(settings: Any, client: Any = None) -> Provider:
    """OpenAI embeddings when an API key is set (or ``client`` is given), else local wordllama."""
    model = getattr(settings, "embedding_model", None) or DEFAULT_EMBEDDING_MODEL
    if model == LOCAL_MODEL or (client is None and not getattr(settings, "openai_api_key", None)):
        return local_provider()
    if client is None:
        import openai

        client = openai.OpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url or None,
            timeout=min(settings.ai_timeout, EMBED_TIMEOUT),
            max_retries=2,
        )
        # A tool call's query is embedded in the reply's thread: its waits end by that reply's deadline.
        hold_deadlines(client)
    return OpenAIProvider(client, model)


# a server without embeddings ---------------------------------------------------------
_fallbacks: "weakref.WeakKeyDictionary[Database, tuple[str, str]]" = weakref.WeakKeyDictionary()
_fallbacks_lock = threading.Lock()


def endpoint_missing(error: BaseException) -> bool:
    """Whether the server answered that it has no embeddings (404 or 405), as opposed to failing for now."""
    return getattr(error, "status_code", None) in MISSING


def _from_the_server(error: BaseException) -> bool:
    """An error the openai SDK raised about the server (a status, a timeout, no connection), not a fault here."""
    return type(error).__module__.partition(".")[0] == "openai"


def _said(error: BaseException) -> str:
    """An error's first line, for a one-line log entry."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fall_back(db: Database, provider: Provider, error: BaseException) -> Provider:
    """``provider``'s server has no embeddings: say so once (one log line), and search ``db`` with wordllama."""
    local = local_provider()
    with _fallbacks_lock:
        if db not in _fallbacks:
            status = getattr(error, "status_code", "?")
            model = getattr(provider, "model", provider.name)
            log.warning("the AI server answered HTTP %s to an embeddings request for %s: it has no embeddings, "
                        "so semantic search uses %s instead (until the app restarts)", status, model, local.name)
            said = (f"The AI server has no embeddings (HTTP {status} for {model}), so semantic search uses the "
                    "local wordllama model instead.")
            _fallbacks[db] = (provider.name, said)  # whose server it was, and what the pages say
            attach(db, local)
    return local


def fallback_reason(db: Database) -> str | None:
    """Why search on ``db`` uses wordllama instead of the configured provider (a sentence), or None."""
    entry = _fallbacks.get(db)
    return entry[1] if entry else None


# state -----------------------------------------------------------------------
def _get_state(tx: Any, name: str) -> str | None:
    row = tx.one("SELECT value FROM search_state WHERE name = ?", [name])
    return row[0] if row else None


def _set_state(tx: Transaction, name: str, value: str) -> None:
    tx.execute(
        "INSERT INTO search_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [name, value],
    )


def active_provider(db: Database) -> str | None:
    """The provider whose vectors cover every message (semantic search uses only it), or None."""
    return _get_state(db, "active_provider")


# jobs ------------------------------------------------------------------------
def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def discover(db: Database, provider: str, chunk: int = DISCOVER_CHUNK) -> int:
    """Turn messages past the provider's watermark into jobs (up to ``chunk`` ids); return how many ids were scanned."""

    def work(tx: Transaction) -> int:
        key = f"scanned:{provider}"
        # Replicas scan one after the other (the row is locked), so the watermark only moves forward.
        tx.execute("INSERT INTO search_state (name, value) VALUES (?, '0') ON CONFLICT DO NOTHING", [key])
        upto = int(tx.one(f"SELECT value FROM search_state WHERE name = ?{db.dialect.for_update}", [key])[0])
        (top,) = tx.one("SELECT max(id) FROM messages WHERE id > ?", [upto])
        if top is None:
            return 0
        high = min(int(top), upto + chunk)
        tx.execute(
            "INSERT INTO embedding_jobs (message_id, provider, state, attempts, created_at) "
            "SELECT id, ?, 'pending', 0, ? FROM messages WHERE id > ? AND id <= ? ON CONFLICT DO NOTHING",
            [provider, db.clock(), upto, high],
        )
        _set_state(tx, key, str(high))
        return high - upto

    return db.write(work)


def claim(db: Database, provider: str, token: str, batch: int = BATCH) -> list[tuple[int, int, str | None]]:
    """Take up to ``batch`` jobs of finished messages: (message id, channel id, text or None if nothing to embed)."""

    def work(tx: Transaction) -> list[tuple[int, int, str | None]]:
        now = db.clock()
        stale = now - timedelta(seconds=LEASE_SECONDS)
        free = "(state = 'pending' OR (state = 'running' AND claimed_at < ?))"
        candidates = tx.execute(
            f"SELECT message_id FROM embedding_jobs j WHERE provider = ? AND {free} AND EXISTS "
            f"(SELECT 1 FROM messages m WHERE m.id = j.message_id AND m.status NOT IN ({_marks(OPEN)})) "
            f"ORDER BY message_id LIMIT ?{db.dialect.skip_locked}",
            [provider, stale, *OPEN, batch],
        ).fetchall()
        if not candidates:
            return []
        ids = [row[0] for row in candidates]
        claimed = tx.execute(
            "UPDATE embedding_jobs SET state = 'running', claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
            f"WHERE provider = ? AND message_id IN ({_marks(ids)}) AND {free} RETURNING message_id",
            [token, now, provider, *ids, stale],
        ).fetchall()
        ids = [row[0] for row in claimed]
        if not ids:
            return []
        rows = tx.execute(
            f"SELECT id, channel_id, status, content FROM messages WHERE id IN ({_marks(ids)}) ORDER BY id", ids
        ).fetchall()
        return [(mid, channel, content if status == "complete" and content.strip() else None)
                for mid, channel, status, content in rows]

    return db.write(work)


def store(db: Database, provider: str, token: str, results: Sequence[tuple[int, int, Any]]) -> int:
    """Write the vectors of jobs this worker still holds and delete those jobs; return how many were written."""
    if not results:
        return 0

    def work(tx: Transaction) -> int:
        ids = [message_id for message_id, _, _ in results]
        held = {
            row[0]
            for row in tx.execute(
                "DELETE FROM embedding_jobs WHERE provider = ? AND claimed_by = ? AND state = 'running' "
                f"AND message_id IN ({_marks(ids)}) RETURNING message_id",
                [provider, token, *ids],
            ).fetchall()
        }
        rows = [(mid, channel, vector) for mid, channel, vector in results if mid in held and vector is not None]
        if rows:
            now = db.clock()
            values = ", ".join("(?, ?, ?, nextval('message_vectors_seq'), ?, ?)" for _ in rows)
            params: list[Any] = []
            for mid, channel, vector in rows:
                params.extend([mid, channel, provider, [float(x) for x in vector], now])
            tx.execute(
                f"INSERT INTO message_vectors (message_id, channel_id, provider, seq, vector, created_at) VALUES {values} "
                "ON CONFLICT (message_id) DO UPDATE SET channel_id = excluded.channel_id, provider = excluded.provider, "
                "seq = excluded.seq, vector = excluded.vector, created_at = excluded.created_at",
                params,
            )
        return len(rows)

    return db.write(work)


def requeue_changed(db: Database, provider: str) -> int:
    """Jobs for scanned messages whose text changed after their vector (a retried reply) or that have none."""

    def work(tx: Transaction) -> int:
        scanned = int(_get_state(tx, f"scanned:{provider}") or 0)
        rows = tx.execute(
            "INSERT INTO embedding_jobs (message_id, provider, state, attempts, created_at) "
            "SELECT m.id, ?, 'pending', 0, ? FROM messages m "
            "LEFT JOIN message_vectors v ON v.message_id = m.id AND v.provider = ? "
            "WHERE m.id <= ? AND m.status = 'complete' AND m.content <> '' "
            "AND (v.message_id IS NULL OR m.updated_at > v.created_at) "
            "ON CONFLICT DO NOTHING RETURNING message_id",
            [provider, db.clock(), provider, scanned],
        ).fetchall()
        return len(rows)

    return db.write(work)


def release(db: Database, provider: str, token: str, ids: Sequence[int], error: str, counted: bool = True) -> None:
    """Give claimed jobs back after a provider error; after MAX_ATTEMPTS counted ones a job is marked failed."""
    if not ids:
        return
    undo = 0 if counted else 1  # an uncounted error takes back the attempt its claim added

    def work(tx: Transaction) -> None:
        tx.execute(
            "UPDATE embedding_jobs SET attempts = attempts - ?, "
            "state = CASE WHEN attempts - ? >= ? THEN 'failed' ELSE 'pending' END, claimed_by = NULL, error = ? "
            f"WHERE provider = ? AND claimed_by = ? AND state = 'running' AND message_id IN ({_marks(ids)})",
            [undo, undo, MAX_ATTEMPTS, error[:500], provider, token, *ids],
        )

    db.write(work)


def requeue_running(db: Database, provider: str) -> int:
    """After a restart: jobs left running go back to pending (a live worker's later write of them is refused)."""

    def work(tx: Transaction) -> int:
        rows = tx.execute(
            "UPDATE embedding_jobs SET state = 'pending', claimed_by = NULL "
            "WHERE provider = ? AND state = 'running' RETURNING message_id",
            [provider],
        ).fetchall()
        return len(rows)

    return db.write(work)


def backlog(db: Database, provider: str) -> int:
    """Messages still waiting for this provider's vector: jobs not yet done plus messages not yet scanned."""
    (count,) = db.one(
        "SELECT (SELECT count(*) FROM messages WHERE id > coalesce("
        "  (SELECT CAST(value AS BIGINT) FROM search_state WHERE name = ?), 0)) + "
        "(SELECT count(*) FROM embedding_jobs WHERE provider = ? AND state IN ('pending', 'running'))",
        [f"scanned:{provider}", provider],
    )
    return int(count)


def activate_if_done(db: Database, provider: str) -> bool:
    """Make ``provider`` the one search uses once all history is embedded (open AI replies aside)."""

    def work(tx: Transaction) -> bool:
        if _get_state(tx, "active_provider") == provider:
            return True
        scanned = int(_get_state(tx, f"scanned:{provider}") or 0)
        if tx.one("SELECT 1 FROM messages WHERE id > ? LIMIT 1", [scanned]):
            return False
        left = tx.one(
            "SELECT 1 FROM embedding_jobs j JOIN messages m ON m.id = j.message_id WHERE j.provider = ? "
            f"AND j.state IN ('pending', 'running') AND m.status NOT IN ({_marks(OPEN)}) LIMIT 1",
            [provider, *OPEN],
        )
        if left:
            return False
        _set_state(tx, "active_provider", provider)
        log.info("semantic search uses %s from now on", provider)
        return True

    return db.write(work)


# the in-memory index ------------------------------------------------------------
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
        vectors = _unit(vectors)
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
    ) -> list[tuple[int, float]]:
        """(message id, cosine) of the ``limit`` closest vectors at or above ``min_similarity``."""
        with self._lock:
            matrix, ids, channels = self.matrix[: self.size], self.ids[: self.size], self.channels[: self.size]
            if channel_id is not None:
                rows = np.flatnonzero(channels == channel_id)
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
class _Attached:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.index = VectorIndex(provider.name)
        self.ready = False  # the provider was active when last asked (then it stays so)


_attached: "weakref.WeakKeyDictionary[Database, _Attached]" = weakref.WeakKeyDictionary()


def attach(db: Database, provider: Provider) -> None:
    """Let search on ``db`` embed queries with ``provider`` (the Embedder does this when it starts)."""
    current = _attached.get(db)
    if current is None or current.provider.name != provider.name:
        _attached[db] = _Attached(provider)


def detach(db: Database) -> None:
    _attached.pop(db, None)


def semantic_ready(db: Database) -> bool:
    """Whether search on ``db`` uses vectors now (a provider is attached and all history is embedded)."""
    attached = _attached.get(db)
    if attached is None:
        return False
    if not attached.ready:
        attached.ready = active_provider(db) == attached.provider.name
    return attached.ready and attached.index.loaded


def nearest(
    db: Database,
    text: str,
    channel_id: int | None = None,
    limit: int = 20,
    exclude: Sequence[int] = (),
    before_id: int | None = None,
) -> list[tuple[int, float]]:
    """(message id, cosine similarity) of the messages closest to ``text``; empty while search is keyword-only."""
    attached = _attached.get(db)
    if attached is None or not semantic_ready(db) or not text.strip():
        return []
    attached.index.refresh(db)  # one count when nothing is new
    try:
        vector = attached.provider.embed([text])[0]
    except Exception as error:  # the embeddings API is down: keyword results still answer
        if endpoint_missing(error):  # found here first (all history was embedded): the Embedder follows
            fall_back(db, attached.provider, error)
        else:
            log.warning("could not embed a search query (%s); answering with keyword matches only", _said(error),
                        exc_info=not _from_the_server(error))
        return []
    return attached.index.nearest(vector, limit, attached.provider.min_similarity, channel_id, exclude, before_id)


def status(db: Database) -> dict[str, Any]:
    """What a page says about semantic search: on or not, the provider, how many messages wait, any fall back."""
    attached = _attached.get(db)
    if attached is None:
        return {"semantic": False, "provider": None, "backlog": 0, "fallback": None}
    name = attached.provider.name
    return {"semantic": semantic_ready(db), "provider": name, "backlog": backlog(db, name),
            "fallback": fallback_reason(db)}


# the worker -------------------------------------------------------------------
def pause_after(failures: int) -> float:
    """Seconds to wait after ``failures`` provider errors in a row: ERROR_PAUSE, doubled each time, capped."""
    return min(ERROR_PAUSE * 2 ** max(failures - 1, 0), ERROR_PAUSE_MAX)


class Embedder:
    """A thread that embeds messages in the background: ``start()``, ``stop()``, ``run_once()``."""

    def __init__(self, db: Database, provider: Provider, batch: int = BATCH) -> None:
        self.db = db
        self.configured = provider  # what the settings chose
        self.provider = provider  # what it embeds with: wordllama once the configured server has no embeddings
        self.batch = batch
        self.token = uuid.uuid4().hex  # names this worker's claims
        self.embedded = 0  # messages this worker embedded (tests and the benchmark read it)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None

    def start(self) -> "Embedder":
        """Requeue jobs a crash left running, attach the provider for search, then work; a second call does nothing."""
        if self._thread is not None:
            return self
        with _fallbacks_lock:
            _fallbacks.pop(self.db, None)  # (new settings, or a restart): the configured server is asked again
        self.provider = self.configured
        attach(self.db, self.provider)
        if not self.db.shared:  # the only process: what it left running died with it (replicas wait for the lease)
            requeued = requeue_running(self.db, self.provider.name)
            if requeued:
                log.info("embedding jobs after a restart: %d requeued", requeued)
        self._unsubscribe = self.db.recent.subscribe(lambda *_: self._wake.set())  # any change: look for work
        self._closing.clear()
        self._thread = threading.Thread(target=self._loop, name="embedder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the batch in hand (up to ``timeout`` s), then stop; unfinished jobs stay for the next start."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._closing.set()
        self._wake.set()
        thread.join(timeout)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Scan for new messages, embed one batch; return how many jobs were handled (0: nothing to do)."""
        fallen = _fallbacks.get(self.db)
        if fallen and fallen[0] == self.provider.name:  # a search found the server without embeddings first
            self.provider = local_provider()
        name = self.provider.name
        while discover(self.db, name) >= DISCOVER_CHUNK:
            pass
        jobs = claim(self.db, name, self.token, self.batch)
        if not jobs:
            activate_if_done(self.db, name)
            return 0
        texts = [(mid, channel, text) for mid, channel, text in jobs if text is not None]
        try:
            vectors = self.provider.embed([text for _, _, text in texts]) if texts else []
        except Exception as error:
            ids = [mid for mid, _, _ in jobs]
            if endpoint_missing(error):  # jobs kept, uncounted: a restart asks the server again
                release(self.db, name, self.token, ids, _said(error), counted=False)
                self.provider = fall_back(self.db, self.provider, error)
                return len(jobs)  # carry on at once, with the local model
            log.warning("embedding %d messages failed (%s); trying again after a pause", len(texts), _said(error),
                        exc_info=not _from_the_server(error))
            release(self.db, name, self.token, ids, _said(error))
            raise
        by_id = {mid: vectors[i] for i, (mid, _, _) in enumerate(texts)}
        stored = store(self.db, name, self.token, [(mid, channel, by_id.get(mid)) for mid, channel, _ in jobs])
        self.embedded += stored
        return len(jobs)

    def _load_index(self) -> None:
        """The first load of the attached vectors (1M: seconds), here and never in a person's search."""
        attached = _attached.get(self.db)
        if attached is not None and not attached.index.loaded:  # at the start, and after a fall back
            try:
                attached.index.refresh(self.db)
            except Exception:
                log.exception("could not load the message vectors; semantic search waits")
                raise

    def _loop(self) -> None:
        checked = time.monotonic()
        failures = 0
        while not self._closing.is_set():
            try:
                self._load_index()
                busy = self.run_once()
                if not busy and time.monotonic() - checked >= RECHECK_SECONDS:
                    checked = time.monotonic()
                    busy = requeue_changed(self.db, self.provider.name)
                failures = 0
            except Exception:
                failures += 1
                self._closing.wait(pause_after(failures))
                continue
            if not busy:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()
