"""Embedding providers: OpenAI's embeddings API or local wordllama, both unit vectors DIMENSIONS wide.

OpenAI embeddings (``EMBEDDING_MODEL``, asked for 256 dimensions) when an API key is set, else
``wordllama``, static word embeddings whose weights ship in its wheel (no network). Also how a
provider's failure reads: a server without embeddings (HTTP 404 or 405) is told apart from one that
fails for a while (``endpoint_missing``).
"""
from __future__ import annotations

import os
import re
import threading
from typing import Any, Protocol, Sequence

import numpy as np

from core.config import DEFAULT_EMBEDDING_MODEL
from core.deadline import hold_deadlines

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
        return unit_vectors(np.array([row[:DIMENSIONS] for row in rows], dtype=np.float32))


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
