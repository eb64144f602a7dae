"""The Embedder: a thread that embeds new messages in the background, through the job queue, and never on the send path.

A provider switch re-embeds every message in the background; until every message has a vector from
the configured provider, search is keyword-only. A server without embeddings makes it carry on with
wordllama (until it is started again); other failures are retried with a growing pause.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from core.embeddings.index import attach, attached_index, fall_back, fallen_back, forget_fallback
from core.embeddings.jobs import (
    BATCH,
    DISCOVER_CHUNK,
    activate_if_done,
    claim,
    discover,
    release,
    requeue_changed,
    requeue_running,
    store,
)
from core.embeddings.providers import (
    Provider,
    embed_recorded,
    endpoint_missing,
    first_line,
    from_the_server,
    local_provider,
)
from core.store import Database

log = logging.getLogger(__package__)  # one logger for the package: the name operators and tests filter on

IDLE_WAIT = 1.0  # seconds the Embedder sleeps when idle and no change was announced
RECHECK_SECONDS = 60.0  # how often an idle Embedder looks for retried replies (new text) and jobs lost to errors
ERROR_PAUSE = 5.0  # seconds the Embedder waits after a provider error, doubled after each one that follows...
ERROR_PAUSE_MAX = 300.0  # ...up to this: a server that stays down is asked every 5 minutes, not every 5 s


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
        forget_fallback(self.db)  # (new settings, or a restart): the configured server is asked again
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
        if fallen_back(self.db) == self.provider.name:  # a search found the server without embeddings first
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
            # A paid API's request is in the usage ledger as the app's (one request embeds many people's messages).
            vectors = embed_recorded(self.db, self.provider, [text for _, _, text in texts]) if texts else []
        except Exception as error:
            ids = [mid for mid, _, _ in jobs]
            if endpoint_missing(error):  # jobs kept, uncounted: a restart asks the server again
                release(self.db, name, self.token, ids, first_line(error), counted=False)
                self.provider = fall_back(self.db, self.provider, error)
                return len(jobs)  # carry on at once, with the local model
            log.warning("embedding %d messages failed (%s); trying again after a pause", len(texts), first_line(error),
                        exc_info=not from_the_server(error))
            release(self.db, name, self.token, ids, first_line(error))
            raise
        by_id = {mid: vectors[i] for i, (mid, _, _) in enumerate(texts)}
        stored = store(self.db, name, self.token, [(mid, channel, by_id.get(mid)) for mid, channel, _ in jobs])
        self.embedded += stored
        return len(jobs)

    def _load_index(self) -> None:
        """The first load of the attached vectors (1M: seconds), here and never in a person's search."""
        index = attached_index(self.db)
        if index is not None and not index.loaded:  # at the start, and after a fall back
            try:
                index.refresh(self.db)
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
