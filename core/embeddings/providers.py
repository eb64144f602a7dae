"""Embedding providers: OpenAI's embeddings API or local wordllama, both unit vectors DIMENSIONS wide.

OpenAI embeddings (``EMBEDDING_MODEL``, asked for 256 dimensions) when an API key is set, else
``wordllama``, static word embeddings whose weights ship in its wheel (no network). Also how a
provider's failure reads: a server without embeddings (HTTP 404 or 405) is told apart from one that
fails for a while (``endpoint_missing``).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Protocol, Sequence

import numpy as np

from core import usage
from core.config import DEFAULT_EMBEDDING_MODEL
from core.deadline import hold_deadlines
from core.store import Database

log = logging.getLogger(__package__)  # one logger for the package: the name operators and tests filter on

DIMENSIONS = 256  # wordllama's size, and what text-embedding-3-* are asked for: one column type for both
LOCAL_MODEL = "wordllama"  # EMBEDDING_MODEL=wordllama keeps embeddings local even with an API key
EMBED_CHARS = 8000  # characters of a message that are embedded (~2k tokens, inside every model's input limit)
MISSING = (404, 405)  # no such endpoint (or model), method not allowed: asking again will not make embeddings
EMBED_TIMEOUT = 10.0  # seconds an embeddings request may take: a search embeds its query while a person waits
ERROR_MAX = 300  # characters of a provider's error kept (embedding_jobs.error, logs): core.ai.reasons.DETAIL_MAX
# What an error's text may carry that is nobody's to read: a URL's user:password@ (as core.ai.redact strips it;
# not imported from there, as core.ai reaches this package through core.search), a bearer token, an API key.
USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
TOKENS = re.compile(r"(?i)\b(bearer\s+|(?:api[_-]?key|token|password|secret)\s*[=:]\s*['\"]?|sk-)[^\s'\",;&)\]}>]+")


class Provider(Protocol):
    name: str  # stored with each vector: vectors of different providers are never compared
    min_similarity: float  # below this cosine a message is not shown as a semantic match

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, DIMENSIONS wide."""


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float32 rows of length one (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class WordLlamaProvider:
    """Local static embeddings (wordllama, MIT): ~20k sentences/s on one core, no network."""

    name = "wordllama/l2_supercat/256"
    paid = False  # runs here: no request, nothing in the usage ledger
    min_similarity = 0.2  # measured: related sentences score 0.24-0.46, unrelated ones below 0.15

    def __init__(self) -> None:
        import wordllama

        # Its plain load() looks for the tokenizer elsewhere and tries to download: point it at its own folder.
        self._model = wordllama.WordLlama.load(
            cache_dir=os.path.dirname(wordllama.__file__), disable_download=True, dim=DIMENSIONS
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return unit_vectors(self._model.embed([t[:EMBED_CHARS] for t in texts]))


class OpenAIProvider:
    """The OpenAI embeddings API (or a compatible server) through the openai SDK."""

    min_similarity = 0.25  # text-embedding-3: unrelated chat lines score ~0.1-0.2
    paid = True  # every request is written to the usage ledger (``embed_recorded``)

    def __init__(self, client: Any, model: str = DEFAULT_EMBEDDING_MODEL) -> None:
        self.client = client
        self.model = model
        self.name = f"openai/{model}/{DIMENSIONS}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, usage.Use]:
        """The vectors and what the request cost: the server's reported usage, else an estimate from the text's size."""
        sent = [t[:EMBED_CHARS] for t in texts]
        response = self.client.embeddings.create(model=self.model, input=sent, dimensions=DIMENSIONS)
        rows = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        if len(rows) != len(texts) or any(len(row) < DIMENSIONS for row in rows):
            raise ValueError(f"the embeddings API returned {len(rows)} vectors of the wrong size for {len(texts)} texts")
        reported = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        use = usage.Use(int(reported), 0, False) if isinstance(reported, int) else usage.estimate("".join(sent), "")
        return unit_vectors(np.array([row[:DIMENSIONS] for row in rows], dtype=np.float32)), use


def embed_recorded(db: Database, provider: Provider, texts: Sequence[str], user_id: int | None = None) -> np.ndarray:
    """``provider.embed(texts)``, with each request to a paid API appended to the usage ledger, failed or not.

    Charged to ``user_id`` (a person's search), else to whoever ``usage.caused_by`` names (a reply's tool search
    or look-back), else to the app (indexing). A failed request is charged by an estimate of its input when the
    server may have done the work (a timeout, a broken connection), and at 0 tokens when it answered with an
    error status (it refused): either way the row says a request was made.
    """
    counted = getattr(provider, "embed_counted", None)
    if not getattr(provider, "paid", False) or counted is None:
        return provider.embed(texts)
    cause_user, reply_id, job_id = usage.cause()
    who = {"user_id": user_id, "reply_id": None, "job_id": None} if user_id is not None else {
        "user_id": cause_user, "reply_id": reply_id, "job_id": job_id}
    try:
        vectors, use = counted(texts)
    except Exception as error:
        refused = getattr(error, "status_code", None) is not None
        use = usage.Use(0, 0, True) if refused else usage.estimate("".join(t[:EMBED_CHARS] for t in texts), "")
        _record(db, use, who, getattr(provider, "model", None))
        raise
    _record(db, use, who, getattr(provider, "model", None))
    return vectors


def _record(db: Database, use: usage.Use, who: dict, model: str | None) -> None:
    try:
        usage.record(db, use, kind="embedding", model=model, **who)
    except Exception:  # the vectors are still good: storing them (or answering the search) goes on
        log.exception("could not write an embeddings request to the usage ledger")


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


def endpoint_missing(error: BaseException) -> bool:
    """Whether the server answered that it has no embeddings (404 or 405), as opposed to failing for now."""
    return getattr(error, "status_code", None) in MISSING


def from_the_server(error: BaseException) -> bool:
    """An error the openai SDK raised about the server (a status, a timeout, no connection), not a fault here."""
    return type(error).__module__.partition(".")[0] == "openai"


def redacted(text: str) -> str:
    """A provider's error text as it may be stored and shown: one line, no credentials, at most ERROR_MAX characters."""
    line = " ".join(TOKENS.sub(r"\1***", USERINFO.sub(r"\1", str(text))).split())
    return line if len(line) <= ERROR_MAX else line[: ERROR_MAX - 1] + "…"


def first_line(error: BaseException) -> str:
    """An error's first line, credentials removed and capped (``redacted``), for a log entry or a job's error."""
    text = str(error).strip()
    return redacted(text.splitlines()[0]) if text else type(error).__name__
