"""What semantic search reads: the registry of the vector index (core.embeddings.vectors) attached to each database.

The registry (``attach``, ``nearest``, ``status``) holds, per database, the provider that embeds queries
and its index; a server found to have no embeddings is said once (``fall_back``, ``fallback_reason``)
and search uses wordllama until the Embedder is started again.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from core.embeddings.jobs import active_provider, backlog
from core.embeddings.providers import (
    Provider,
    embed_recorded,
    endpoint_missing,
    first_line,
    from_the_server,
    local_provider,
)
from core.embeddings.vectors import VectorIndex
from core.store import Database

log = logging.getLogger(__package__)  # one logger for the package: the name operators and tests filter on

QUERY_CACHE = 256  # query vectors kept per database: a page rerun searches again, and a paid API is asked once


class _Attached:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.index = VectorIndex(provider.name)
        self.ready = False  # the provider was active when last asked (then it stays so)
        self.queries: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> vector, least recently used first
        self.lock = threading.Lock()

    def query_vector(self, db: Database, text: str, user_id: int | None) -> np.ndarray:
        """``text``'s vector: from the cache, else asked for (and, from a paid API, written to the usage ledger)."""
        with self.lock:
            vector = self.queries.get(text)
            if vector is not None:
                self.queries.move_to_end(text)
                return vector
        vector = embed_recorded(db, self.provider, [text], user_id)[0]
        with self.lock:
            self.queries[text] = vector
            while len(self.queries) > QUERY_CACHE:
                self.queries.popitem(last=False)
        return vector


_attached: "weakref.WeakKeyDictionary[Database, _Attached]" = weakref.WeakKeyDictionary()


def attach(db: Database, provider: Provider) -> None:
    """Let search on ``db`` embed queries with ``provider`` (the Embedder does this when it starts)."""
    current = _attached.get(db)
    if current is None or current.provider.name != provider.name:
        _attached[db] = _Attached(provider)


def detach(db: Database) -> None:
    """Stop semantic search on ``db`` (keyword matches only)."""
    _attached.pop(db, None)


def attached_index(db: Database) -> VectorIndex | None:
    """The index search on ``db`` reads, or None while no provider is attached."""
    attached = _attached.get(db)
    return attached.index if attached is not None else None


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
    user_id: int | None = None,
    hidden: Any = None,
) -> list[tuple[int, float]]:
    """(message id, cosine similarity) of the messages closest to ``text`` (none of a ``hidden`` channel:
    core.membership.Hidden); empty while search is keyword-only.

    ``user_id`` is the person searching: a paid API's request for the query's vector is charged to them.
    """
    attached = _attached.get(db)
    if attached is None or not semantic_ready(db) or not text.strip():
        return []
    attached.index.refresh(db)  # one count when nothing is new
    try:
        vector = attached.query_vector(db, text, user_id)
    except Exception as error:  # the embeddings API is down: keyword results still answer
        if endpoint_missing(error):  # found here first (all history was embedded): the Embedder follows
            fall_back(db, attached.provider, error)
        else:
            log.warning("could not embed a search query (%s); answering with keyword matches only", first_line(error),
                        exc_info=not from_the_server(error))
        return []
    return attached.index.nearest(vector, limit, attached.provider.min_similarity, channel_id, exclude, before_id,
                                  hidden)


def paid_queries(db: Database) -> bool:
    """Whether a search on ``db`` now asks a paid embeddings API for its query's vector (then it is in the ledger)."""
    attached = _attached.get(db)
    return attached is not None and getattr(attached.provider, "paid", False) and semantic_ready(db)


def status(db: Database) -> dict[str, Any]:
    """What a page says about semantic search: on or not, the provider, how many messages wait, any fall back."""
    attached = _attached.get(db)
    if attached is None:
        return {"semantic": False, "provider": None, "backlog": 0, "fallback": None}
    name = attached.provider.name
    return {"semantic": semantic_ready(db), "provider": name, "backlog": backlog(db, name),
            "fallback": fallback_reason(db)}


# a server without embeddings ---------------------------------------------------------
_fallbacks: "weakref.WeakKeyDictionary[Database, tuple[str, str]]" = weakref.WeakKeyDictionary()
_fallbacks_lock = threading.Lock()


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


def fallen_back(db: Database) -> str | None:
    """The name of the provider whose server was found to have no embeddings on ``db``, or None."""
    entry = _fallbacks.get(db)
    return entry[0] if entry else None


def forget_fallback(db: Database) -> None:
    """Ask the configured server again (new settings, or a restart): a fall back lasts until the Embedder starts."""
    with _fallbacks_lock:
        _fallbacks.pop(db, None)
