"""The AI worker: threads that answer pending replies by streaming from an OpenAI-compatible server.

A dispatcher thread claims a job (``core.replies.claim_next_job``) only while one of ``settings.ai_workers``
worker threads is free, so a claimed job never waits behind others and each job is handed out once. A worker
sends the channel's system prompt and the 10 most recent finished messages, writes the growing text at most
every ``STREAM_WRITE_INTERVAL`` and once at the end, and closes the reply as complete, or as an error with a
reason a person understands (any partial text is kept). The SDK retries 408/409/429/5xx and timeouts itself.

Decisions:
* No API key and no client passed in: the Responder still runs and closes every reply at once with
  ``NO_KEY_REPLY``, so nothing stays pending forever and Retry works once a key is set.
* ``settings.ai_timeout`` is the SDK timeout of the client built here (each try waits at most that long for
  the server) and also caps a whole reply from request to last chunk, so a server that trickles forever ends
  with the timeout message and its text so far. The cap is checked as chunks arrive.
* A stream that breaks or ends without ``finish_reason == "stop"`` is an error that keeps its text; an empty
  reply is an error, never an empty complete message.
* ``stop()`` claims nothing more, lets running replies finish for up to ``grace`` seconds, then aborts the
  rest between chunks without writing; ``start()`` (here or after a restart) requeues them through
  ``core.replies.recover_interrupted``. Run one Responder per database.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import openai

from core.chat import Job, get_channel, load_context, system_prompt
from core.config import Settings
from core.db import Database
from core.errors import ChatError
from core.replies import (
    claim_next_job,
    renew_leases,
    fail_reply,
    finish_reply,
    pending_jobs,
    record_request,
    recover_interrupted,
    stream_reply,
)

log = logging.getLogger(__name__)

STREAM_WRITE_INTERVAL = 0.25  # seconds between text writes: smooth to read, and 4 writes/s instead of one per token
IDLE_WAIT = 1.0  # seconds the dispatcher sleeps between looks when no job signal arrives (a missed signal costs this)
STOP_GRACE = 3.0  # seconds stop() lets running replies finish before aborting them
ABORT_WAIT = 2.0  # seconds stop() then waits for workers to notice the abort (one chunk gap)
SDK_RETRIES = 2  # the SDK's own retries of 408/409/429/5xx and timeouts
LEASE_BEATS = 3  # lease renewals (and sweeps) per lease period: two can fail before a live job looks orphaned

NO_KEY = "AI replies are off: no OPENAI_API_KEY is set."
NO_KEY_REPLY = NO_KEY + " Add it to the environment or .streamlit/secrets.toml, then press Retry."
BUSY = "The AI service is busy (rate limit). Try again in a moment."
TIMEOUT = "The AI service did not answer in {seconds:g} s."
BAD_KEY = "The AI service refused the API key. Check OPENAI_API_KEY."
SERVER_ERROR = "The AI service had an error (HTTP {status}). Try again."
UNREACHABLE = "Could not reach the AI service at {host}."
NO_MODEL = "The AI service answered HTTP 404 for the model {model!r}. Check OPENAI_MODEL and OPENAI_BASE_URL."
REFUSED = "The AI service refused the request (HTTP {status}){detail}"
SERVICE_ERROR = "The AI service reported an error{detail}"
CUT_OFF = "The reply was cut off at the model's length limit."
FILTERED = "The AI service's content filter stopped the reply."
ODD_FINISH = "The AI service ended the reply in an unexpected way ({reason})."
CLOSED = "The AI service closed the stream before the reply was finished."
EMPTY = "The AI returned an empty reply."
UNEXPECTED = "Something went wrong while writing the AI reply (the error was logged). Press Retry to try again."
DETAIL_MAX = 300  # characters of a server's own error text shown to a person


class _Abandoned(Exception):
    """The Responder is stopping: leave the job for recover_interrupted, write nothing more."""


class _TooSlow(Exception):
    """The reply took longer than settings.ai_timeout while streaming."""


def _host(base_url: Any) -> str:
    parts = urlsplit(str(base_url))
    return parts.netloc or str(base_url)


def _detail(error: openai.APIError) -> str:
    body = error.body
    text = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(text or "").split())[:DETAIL_MAX]
    return f": {text}" if text else "."


def explain(error: BaseException, *, host: str, timeout: float, model: str, streamed: bool) -> str:
    """A reason a person understands for an exception from the SDK (``streamed``: it broke mid-stream)."""
    if isinstance(error, openai.APITimeoutError):
        return TIMEOUT.format(seconds=timeout)
    if isinstance(error, openai.APIConnectionError):
        return CLOSED if streamed else UNREACHABLE.format(host=host)
    if isinstance(error, openai.RateLimitError):
        return BUSY
    if isinstance(error, openai.AuthenticationError):
        return BAD_KEY
    if isinstance(error, openai.NotFoundError):
        return NO_MODEL.format(model=model)
    if isinstance(error, openai.APIStatusError):
        if error.status_code >= 500:
            return SERVER_ERROR.format(status=error.status_code)
        return REFUSED.format(status=error.status_code, detail=_detail(error))
    if isinstance(error, openai.APIError):
        return SERVICE_ERROR.format(detail=_detail(error))
    return UNEXPECTED


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
                max_retries=SDK_RETRIES,
            )
        self.client = client
        self.workers = settings.ai_workers
        self.host = _host(client.base_url) if hasattr(client, "base_url") else ""
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}"  # shown in ai_jobs.owner

    @property
    def enabled(self) -> bool:
        return self.client is not None

    # lifecycle -----------------------------------------------------------------
    def start(self) -> "Responder":
        """Requeue replies a crash interrupted, then start answering; a second call does nothing."""
        with self._lock:
            if self._run is not None:
                return self
            recovered = recover_interrupted(self.db, owner=self.owner)
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
        while not run.closing.is_set():
            if not run.free.acquire(timeout=IDLE_WAIT):
                continue  # every worker busy
            try:
                job = None if run.closing.is_set() else claim_next_job(self.db, self.settings.ai_lease_seconds, self.owner)
            except Exception:
                log.exception("could not claim an AI job")
                run.free.release()
                run.closing.wait(IDLE_WAIT)
                continue
            if job is None:
                run.free.release()
                if not run.closing.is_set():
                    self.db.wait_for_jobs(IDLE_WAIT)
                continue
            with run.lock:
                run.active[job.id] = job
            try:
                run.pool.submit(self._work, run, job)
            except RuntimeError:  # the pool shut down meanwhile: the next start() requeues the job
                return

    def _work(self, run: _Run, job: Job) -> None:
        try:
            if self.client is None:
                fail_reply(self.db, job, NO_KEY_REPLY)
            else:
                self._answer(run, job)
        except _Abandoned:
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

    # one reply -----------------------------------------------------------------
    def _answer(self, run: _Run, job: Job) -> None:
        channel = get_channel(self.db, job.channel_id)
        context = load_context(self.db, job.channel_id, upto=job.trigger_id)
        messages = [{"role": "system", "content": system_prompt(channel)}, *context]
        model = self.settings.openai_model
        record_request(self.db, job.reply_id, messages, model)
        started = time.monotonic()
        try:
            stream = self.client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        except openai.APIError as error:
            self._fail(run, job, self._explain(error, streamed=False), "", started)
            return
        reply = _Reply(started)
        try:
            self._read(run, job, stream, reply)
        except _TooSlow:
            self._fail(run, job, TIMEOUT.format(seconds=self.settings.ai_timeout), reply.text, started)
            return
        except openai.APIError as error:  # e.g. the connection broke mid-stream: keep the text so far
            self._fail(run, job, self._explain(error, streamed=True), reply.text, started)
            return
        finally:
            stream.close()
        self._finish(run, job, reply)

    def _read(self, run: _Run, job: Job, stream: Any, reply: "_Reply") -> None:
        """Pull chunks, writing the text so far at most every STREAM_WRITE_INTERVAL; stop if a person stopped it."""
        for chunk in stream:
            if run.abort.is_set():
                raise _Abandoned()
            if getattr(chunk, "usage", None) is not None:
                reply.usage = chunk.usage
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    reply.parts.append(choice.delta.content)
                if choice.finish_reason:
                    reply.finish_reason = choice.finish_reason
            now = time.monotonic()
            if reply.parts and reply.first_at is None:
                reply.first_at = now
            if reply.unwritten and (reply.written_at is None or now - reply.written_at >= STREAM_WRITE_INTERVAL):
                if not stream_reply(self.db, job.reply_id, reply.text, job_id=job.id):
                    reply.stopped = True  # a person pressed Stop: pull no more chunks
                    return
                reply.written_at = time.monotonic()  # after the write, so writes stay an interval apart
                reply.written = len(reply.parts)
            if now - reply.started > self.settings.ai_timeout:
                raise _TooSlow()

    def _finish(self, run: _Run, job: Job, reply: "_Reply") -> None:
        if run.abort.is_set():
            raise _Abandoned()
        if reply.stopped:  # finish_reply leaves a stopped reply's text and state alone
            finish_reply(self.db, job, reply.text, ttft_ms=reply.ttft_ms, total_ms=reply.elapsed_ms())
            return
        if reply.finish_reason != "stop":
            reason = {None: CLOSED, "length": CUT_OFF, "content_filter": FILTERED}.get(
                reply.finish_reason, ODD_FINISH.format(reason=reply.finish_reason)
            )
            self._fail(run, job, reason, reply.text, reply.started)
        elif not reply.text.strip():
            self._fail(run, job, EMPTY, "", reply.started)
        else:
            usage = reply.usage
            finish_reply(
                self.db,
                job,
                reply.text,
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
                ttft_ms=reply.ttft_ms,
                total_ms=reply.elapsed_ms(),
            )

    def _fail(self, run: _Run, job: Job, reason: str, text: str, started: float) -> None:
        if run.abort.is_set():
            raise _Abandoned()
        total_ms = (time.monotonic() - started) * 1000
        fail_reply(self.db, job, reason, content=text or None, total_ms=total_ms)

    def _explain(self, error: BaseException, streamed: bool) -> str:
        log.warning("AI request failed: %r", error)
        return explain(
            error, host=self.host, timeout=self.settings.ai_timeout, model=self.settings.openai_model, streamed=streamed
        )


class _Reply:
    """A reply being streamed: text so far, finish reason, usage, timings."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[str] = []
        self.written = 0  # parts already written to the database
        self.written_at: float | None = None
        self.first_at: float | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.stopped = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def unwritten(self) -> bool:
        return len(self.parts) > self.written

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_at is None else (self.first_at - self.started) * 1000

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000
