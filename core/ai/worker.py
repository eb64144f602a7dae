"""The AI worker: a Responder's threads claim pending replies and hand each to one ``Answer`` (``core.ai.reply``).

A dispatcher thread claims a job (``core.jobs.claim_next_job``) only while one of ``settings.ai_workers``
worker threads is free, so a claimed job never waits behind others and each job is handed out once. The
deadline of a reply starts at its claim. A keeper thread renews the leases of the jobs in hand and sweeps
expired ones.

Decisions:
* No API key and no client passed in: the Responder still runs and closes every reply at once with
  ``NO_KEY_REPLY``, so nothing stays pending forever and Retry works once a key is set.
* ``stop()`` claims nothing more, lets running replies finish for up to ``grace`` seconds, then aborts the
  rest between chunks (or during a retry wait) without writing; ``start()`` (here or after a restart)
  requeues them through ``core.jobs.recover_interrupted`` (on a shared database: once their lease expired).
  Run one Responder per database.
* Only a fault of this app (e.g. a database error) ends a reply as ``UNEXPECTED``.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from core.ai.reasons import NO_KEY, NO_KEY_REPLY, UNEXPECTED
from core.ai.redact import host, logger
from core.ai.reply import Answer
from core.ai.stream import Abandoned, Link
from core import usage
from core.config import Settings
from core.deadline import Deadline, hold_deadlines
from core.errors import ChatError
from core.limits import budget_spent
from core.jobs import Job, claim_next_job, pending_jobs, recover_interrupted, renew_leases
from core.replies import fail_reply
from core.store import Database

log = logger(__name__)

IDLE_WAIT = 1.0  # seconds the dispatcher sleeps between looks when no job signal arrives
STOP_GRACE = 3.0  # seconds stop() lets running replies finish before aborting them
ABORT_WAIT = 2.0  # seconds stop() then waits for workers to notice the abort (one chunk gap)
# Lease renewals (and sweeps) per lease period: two can fail before a live job looks orphaned, and a dead process's
# jobs are requeued between lease - lease/3 and lease + lease/3 after it died (10 s lease: 6.7-13.3 s).
LEASE_BEATS = 3


class _Run:
    """One start()..stop() of a Responder: its pool, dispatcher, free-worker count and jobs in hand."""

    def __init__(self, workers: int) -> None:
        self.closing = threading.Event()  # claim nothing more
        self.abort = threading.Event()  # running replies end at their next chunk, writing nothing more
        self.free = threading.Semaphore(workers)  # the dispatcher claims a job only after taking one
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="ai-reply")
        self.active: dict[int, Job] = {}
        self.lock = threading.Lock()
        self.dispatcher: threading.Thread | None = None
        self.keeper: threading.Thread | None = None

    def running(self) -> int:
        with self.lock:
            return len(self.active)

    def wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


class Responder:
    """A pool of ``settings.ai_workers`` threads answering AI replies; ``start()``, ``stop()``, ``status()``."""

    def __init__(self, db: Database, settings: Settings, client: Any = None) -> None:
        self.db = db
        self.settings = settings
        if client is None and settings.ai_enabled:
            client = openai.OpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or None,
                timeout=settings.ai_timeout,
            )
        if isinstance(client, openai.OpenAI):
            client = client.with_options(max_retries=0)  # retries are ours: the SDK would sleep past the deadline
            hold_deadlines(client)
        self.client = client
        self.workers = settings.ai_workers
        self.host = host(client.base_url) if hasattr(client, "base_url") else ""
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._no_tools: set[str] = set()  # models whose server refused tools (kept in memory, per process)
        # Shown in ai_jobs.owner. The random part tells apart two processes with one hostname and pid
        # (a container restarted as PID 1, replicas on one host name): none takes the other's jobs for its own.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def enabled(self) -> bool:
        return self.client is not None

    # lifecycle -----------------------------------------------------------------
    def start(self) -> "Responder":
        """Requeue replies a crash interrupted, then start answering; a second call does nothing."""
        with self._lock:
            if self._run is not None:
                return self
            recovered = recover_interrupted(self.db)
            if recovered["requeued"] or recovered["closed"]:
                log.info("AI replies after a restart: %(requeued)d requeued, %(closed)d closed", recovered)
            if not self.enabled:
                log.warning("%s Every AI reply ends at once with that reason.", NO_KEY)
            run = self._run = _Run(self.workers)
            run.dispatcher = threading.Thread(target=self._dispatch, args=(run,), name="ai-dispatcher", daemon=True)
            run.dispatcher.start()
            run.keeper = threading.Thread(target=self._keep, args=(run,), name="ai-keeper", daemon=True)
            run.keeper.start()
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Claim nothing more, let running replies finish for ``grace`` s, abort the rest; safe to call twice."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return
        run.closing.set()
        run.free.release()  # wake the dispatcher if it waits for a free worker ...
        self.db.signal_jobs()  # ... or for a job
        run.dispatcher.join(IDLE_WAIT + ABORT_WAIT)
        if not run.wait_idle(grace):
            run.abort.set()
            if not run.wait_idle(ABORT_WAIT):
                log.warning("AI workers still wait on the AI service at stop; they will write nothing more")
        run.pool.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        """What a page shows about the AI: on or off and why, model, server, workers, queue."""
        run = self._run
        return {
            "enabled": self.enabled,
            "reason": "" if self.enabled else NO_KEY,
            "model": self.settings.openai_model,
            "base_url": self.host,
            "workers": self.workers,
            "pending": pending_jobs(self.db),
            "running": run.running() if run is not None else 0,
            "started": run is not None,
        }

    # leases ---------------------------------------------------------------------
    def _keep(self, run: _Run) -> None:
        """Renew the leases of the jobs in hand and, every so often, requeue jobs whose lease expired.

        The sweep finds replies whose process died (another replica, or this one before a restart) and
        replies a failed write left open (e.g. while the disk was full), without waiting for a restart.
        """
        beat = self.settings.ai_lease_seconds / LEASE_BEATS
        while not run.closing.wait(beat):
            with run.lock:
                in_hand = list(run.active)
            try:
                renew_leases(self.db, in_hand, self.settings.ai_lease_seconds)
                swept = recover_interrupted(self.db, everything=False)
                if swept["requeued"] or swept["closed"]:
                    log.info("AI replies whose lease expired: %(requeued)d requeued, %(closed)d closed", swept)
            except Exception:
                log.exception("could not renew AI job leases or sweep expired ones")

    # dispatching ---------------------------------------------------------------
    def _dispatch(self, run: _Run) -> None:
        refused = False  # the last claim was refused by the database
        while not run.closing.is_set():
            if not run.free.acquire(timeout=IDLE_WAIT):
                continue  # every worker busy
            mark = self.db.jobs_mark()  # a job sent while the claim looks is not missed by the wait below
            try:
                job = None if run.closing.is_set() else claim_next_job(self.db, self.settings.ai_lease_seconds, self.owner)
            except ChatError as error:  # the database refuses writes for now (a full or read-only disk, a server away)
                if not refused:
                    log.warning("could not claim an AI job: %s", error)  # one line per outage, not one a second
                refused = True
                run.free.release()
                run.closing.wait(IDLE_WAIT)
                continue
            except Exception:
                log.exception("could not claim an AI job")
                run.free.release()
                run.closing.wait(IDLE_WAIT)
                continue
            if refused:
                log.info("AI jobs can be claimed again")
                refused = False
            if job is None:
                run.free.release()
                if not run.closing.is_set():
                    self.db.wait_for_jobs(IDLE_WAIT, since=mark)
                continue
            deadline = Deadline(self.settings.ai_timeout)  # from the claim: queueing in the pool counts too
            with run.lock:
                run.active[job.id] = job
            try:
                run.pool.submit(self._work, run, job, deadline)
            except RuntimeError:  # the pool shut down meanwhile: the next start() requeues the job
                return

    def _work(self, run: _Run, job: Job, deadline: Deadline) -> None:
        try:
            if self.client is None:
                fail_reply(self.db, job, NO_KEY_REPLY)
            elif spent := budget_spent(self.db, self.settings.limits):  # today's AI token budget is used up
                fail_reply(self.db, job, spent)
            else:
                link = Link(self.client, self.host, self.settings.openai_model, run.abort)
                with deadline, usage.caused_by(job.requested_by, job.reply_id, job.id):  # its tools' embeddings
                    Answer(self.db, self.settings, link, self._no_tools, job, deadline).run()
        except Abandoned:
            log.info("AI reply %d abandoned by stop(); the next start requeues it", job.reply_id)
        except Exception as error:
            log.exception("AI reply %d failed", job.reply_id)
            try:
                if not run.abort.is_set():
                    fail_reply(self.db, job, str(error) if isinstance(error, ChatError) else UNEXPECTED)
            except Exception:
                log.exception("could not mark AI reply %d as failed", job.reply_id)
        finally:
            with run.lock:
                run.active.pop(job.id, None)
            run.free.release()
