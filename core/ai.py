"""The AI worker: threads that answer pending replies by streaming from an OpenAI-compatible server.

A dispatcher thread claims a job (``core.replies.claim_next_job``) only while one of ``settings.ai_workers``
worker threads is free, so a claimed job never waits behind others and each job is handed out once. A worker
sends the channel's system prompt and the 10 most recent finished messages, writes the growing text at most
every ``STREAM_WRITE_INTERVAL`` and once at the end, and closes the reply as complete, or as an error with a
reason a person understands (any partial text is kept).

What the model is sent (``core.context.fit``): the channel's persona, for a "look further back" channel a
system note of related older messages (``core.tools.look_back``), the recent messages within
``settings.ai_context_tokens`` (the newest always, cut with a marker if need be), and this reply's tool calls.
The model (the channel's own, else ``OPENAI_MODEL``) may call ``search_messages`` and ``read_messages``
(``core.tools``) for up to ``TOOL_ROUNDS`` rounds; each call is a step kept on the reply, written before it
runs, so every window shows what the AI is doing. At most ``settings.ai_tool_calls_per_round`` calls run
from one answer and ``settings.ai_tool_calls_per_reply`` over the reply, the deadline is checked before
each, and all results together take at most ``TOOL_RESULTS_SHARE`` of the budget; a call past a cap is
answered "Not run: ..." and shown as one step. Every request that got an answer (finished, broken or
stopped) is appended to the usage ledger (``core.usage``), charged to whoever asked for the attempt. A server that answers 400 to ``tools`` gets the request
once more without them, and that model gets no tools again in this process (``_no_tools``, in memory).

The deadline (``settings.ai_timeout``, ``AI_TIMEOUT_SECONDS``) is one cap on the whole reply, from the moment
its job is claimed to its last chunk, across retries and waits:
* Every network wait of the worker (connect, send, the wait for headers, each read of the stream) ends at the
  deadline (``core.deadline``); each try is also given the time left as its timeout.
* The worker retries 408/409/429/5xx, timeouts and failed connections itself (``RETRIES`` times; the SDK's
  own retries are off, as they sleep out any ``Retry-After`` up to 2 minutes). It waits what the server's
  ``Retry-After``/``Retry-After-Ms`` asks, else 0.5 s, 1 s, ... as the SDK would. When that wait would cross
  the deadline it gives up at once: "The AI service is busy (HTTP 503) and asked to wait 30 s, more than
  the 8 s a reply may take. Try again later." or "The AI service was busy (rate limit); gave up after 7.4 s."
* No answer by the deadline: "No answer from the AI service within 8 s." An answer still streaming at the
  deadline: "The AI service did not finish the reply within 8 s." with the text so far kept.
So a reply ends at most one database write (plus thread scheduling) past its deadline; tests allow 1 s.

Faults inside a stream keep every character received before them, with a reason: a dropped connection ("...
closed the stream before the reply was finished"), an ``error`` event ("The AI service reported an error:
<its message>"), an event that cannot be parsed ("... sent a part of the reply that could not be read").
Only a fault of this app (e.g. a database error) ends as ``UNEXPECTED``.

Decisions:
* No API key and no client passed in: the Responder still runs and closes every reply at once with
  ``NO_KEY_REPLY``, so nothing stays pending forever and Retry works once a key is set.
* A stream that ends without ``finish_reason == "stop"`` is an error that keeps its text; an empty reply is
  an error, never an empty complete message.
* Credentials never leave in words: the server is named by host and port only, and URLs in this module's,
  the SDK's and httpx's log records lose their ``user:password@`` part (``safe_url``).
* ``stop()`` claims nothing more, lets running replies finish for up to ``grace`` seconds, then aborts the
  rest between chunks (or during a retry wait) without writing; ``start()`` (here or after a restart)
  requeues them through ``core.replies.recover_interrupted`` (on a shared database: once their lease expired). Run one Responder per database.
"""
from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import openai

from core import tools, usage
from core.chat import get_channel, load_context, system_prompt
from core.config import Settings
from core.context import RETRIEVAL_SHARE, TOOL_RESULT_SHARE, TOOL_RESULTS_SHARE, estimate_tokens, fit, tools_tokens, trim
from core.deadline import Deadline, hold_deadlines
from core.errors import ChatError
from core.limits import budget_spent
from core.replies import (
    Job,
    claim_next_job,
    fail_reply,
    finish_reply,
    pending_jobs,
    record_request,
    record_steps,
    recover_interrupted,
    renew_leases,
    stream_reply,
)
from core.store import Database

log = logging.getLogger(__name__)

STREAM_WRITE_INTERVAL = 0.25  # seconds between text writes: smooth to read, and 4 writes/s instead of one per token
IDLE_WAIT = 1.0  # seconds the dispatcher sleeps between looks when no job signal arrives
STOP_GRACE = 3.0  # seconds stop() lets running replies finish before aborting them
ABORT_WAIT = 2.0  # seconds stop() then waits for workers to notice the abort (one chunk gap)
RETRIES = 2  # retries of 408/409/429/5xx, timeouts and failed connections, as many as the SDK's default
FIRST_BACKOFF = 0.5  # seconds before the first retry when the server names no wait; doubles each time (the SDK's)
MAX_BACKOFF = 8.0  # seconds: the SDK's cap on its backoff
RETRYABLE = (408, 409, 429)  # and every 5xx: the statuses the SDK retries
TOOL_ROUNDS = 3  # rounds of tool calls a reply may make; the next round must answer (tool_choice "none")
LEASE_BEATS = 3  # lease renewals (and sweeps) per lease period: two can fail before a live job looks orphaned

NO_KEY = "AI replies are off: no OPENAI_API_KEY is set."
NO_KEY_REPLY = NO_KEY + " Add it to the environment or .streamlit/secrets.toml, then press Retry."
BUSY = "The AI service is busy (rate limit). Try again in a moment."
NO_ANSWER = "No answer from the AI service within {seconds} s. Try again."
TOO_SLOW = "The AI service did not finish the reply within {seconds} s."
BUSY_WAIT = (
    "The AI service is busy ({what}) and asked to wait {wait} s, more than the {seconds} s a reply may take. "
    "Try again later."
)
BUSY_GAVE_UP = "The AI service was busy ({what}); gave up after {elapsed} s. Try again later."
BAD_KEY = "The AI service refused the API key. Check OPENAI_API_KEY."
SERVER_ERROR = "The AI service had an error (HTTP {status}). Try again."
UNREACHABLE = "Could not reach the AI service at {host}."
NO_MODEL = "The AI service answered HTTP 404 for the model {model!r}. Check OPENAI_MODEL and OPENAI_BASE_URL."
REFUSED = "The AI service refused the request (HTTP {status}){detail}"
SERVICE_ERROR = "The AI service reported an error{detail}"
UNREADABLE = "The AI service sent a part of the reply that could not be read, so the reply ends there."
CUT_OFF = "The reply was cut off at the model's length limit."
FILTERED = "The AI service's content filter stopped the reply."
ODD_FINISH = "The AI service ended the reply in an unexpected way ({reason})."
CLOSED = "The AI service closed the stream before the reply was finished."
EMPTY = "The AI returned an empty reply."
TOOLS_OFF = "The AI server does not take tools for {model}, so the AI answered without searching."
ENDLESS_TOOLS = "The AI kept asking for more searches without answering. Try asking more precisely."
REPEATED_CALL = "The AI asked for exactly the same thing again."
NOT_RUN_ROUND = "Not run: at most {n} tool calls are run per answer. Answer with what you have, or ask for fewer."
NOT_RUN_REPLY = "Not run: this reply has made all {n} tool calls it may. Answer with what you have."
NOT_RUN_ROOM = "Not run: the results so far fill the room this reply has for them. Answer with what you have."
NOT_RUN_TIME = "Not run: this reply is out of time."
CAPPED = "The AI asked for {n} more searches than a reply may make; they were not run."
RESULT_FLOOR = 64  # tokens: with less room than this left for results, a tool call is not run
UNEXPECTED = "Something went wrong while writing the AI reply (the error was logged). Press Retry to try again."
DETAIL_MAX = 300  # characters of a server's own error text shown to a person
USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")  # the user:password@ of a URL


def safe_url(text: Any) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed (for messages and logs)."""
    return USERINFO.sub(r"\1", str(text))


class _Redact(logging.Filter):
    """Strip credentials from URLs in a log record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if USERINFO.search(message):
            record.msg, record.args = safe_url(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = safe_url("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return True


for _name in (__name__, "openai", "httpx2", "httpcore2"):  # httpx2 logs every request's full URL at INFO
    logging.getLogger(_name).addFilter(_Redact())


def _host(base_url: Any) -> str:
    parts = urlsplit(str(base_url))
    return parts.netloc.rpartition("@")[2] or safe_url(base_url)


def _seconds(value: float) -> str:
    """Seconds as a person reads them: 8, 0.5, 7.4, 30."""
    return f"{round(value, 1):g}" if value < 10 else f"{round(value):g}"


def _detail(error: openai.APIError) -> str:
    body = error.body
    text = body.get("message") if isinstance(body, dict) else None
    text = " ".join(safe_url(text or "").split())[:DETAIL_MAX]
    return f": {text}" if text else "."


def explain(error: BaseException, *, host: str, timeout: float, model: str, streamed: bool) -> str:
    """A reason a person understands for an exception from the SDK (``streamed``: it broke mid-stream)."""
    if isinstance(error, openai.APITimeoutError):
        return (TOO_SLOW if streamed else NO_ANSWER).format(seconds=_seconds(timeout))
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


def _asked_wait(headers: Any) -> float | None:
    """The wait a response's Retry-After-Ms / Retry-After header asks for, in seconds (None: none given)."""
    for header, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
        when = email.utils.parsedate_tz(value)  # Retry-After may be an HTTP date
        if when is not None:
            return max(0.0, email.utils.mktime_tz(when) - time.time())
    return None


def _retryable(error: openai.APIError) -> bool:
    """Whether a try that failed this way is worth another, as the SDK decides."""
    if isinstance(error, openai.APIConnectionError):  # timeouts included
        return True
    if not isinstance(error, openai.APIStatusError):
        return False
    should = error.response.headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return error.status_code in RETRYABLE or error.status_code >= 500


class _Abandoned(Exception):
    """The Responder is stopping: leave the job for recover_interrupted, write nothing more."""


class _Ended(Exception):
    """The reply ends as an error with this readable reason (the text so far is kept)."""


class _ToolsRefused(Exception):
    """The server answered 400 to a request carrying tools: try once without them."""


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
        self.host = _host(client.base_url) if hasattr(client, "base_url") else ""
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
                with deadline:
                    self._answer(run, job, deadline)
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
    def _answer(self, run: _Run, job: Job, deadline: Deadline) -> None:
        channel = get_channel(self.db, job.channel_id)
        model = channel.model or self.settings.openai_model
        budget = self.settings.ai_context_tokens
        history = load_context(self.db, job.channel_id, upto=job.trigger_id)
        system = [{"role": "system", "content": system_prompt(channel)}]
        steps: list[dict] = []
        if channel.look_back and history:
            note, step = tools.look_back(self.db, channel, job.trigger_id, int(budget * RETRIEVAL_SHARE))
            if note is not None:
                system.append(note)
                steps.append(step)
        use_tools = model not in self._no_tools
        tail: list[dict] = []  # this reply's tool calls and their results, sent with every later round
        done_calls: dict[tuple[str, str], str] = {}
        reply = _Reply(time.monotonic())
        calls_run = 0
        room = int(budget * TOOL_RESULTS_SHARE)  # what all of this reply's tool results together may take
        for round_ in range(TOOL_ROUNDS + 1):
            fixed = tools_tokens(tools.TOOLS) if use_tools else 0
            fitted = fit(system, history, tail, budget, fixed)
            steps = [s for s in steps if s.get("kind") != "budget"]
            if fitted.note():
                steps.append({"kind": "budget", "label": fitted.note(), "dropped": fitted.dropped})
            if steps and not self._steps(job, steps, reply):
                break
            record_request(self.db, job.reply_id, fitted.messages, model)
            request: dict[str, Any] = {"model": model, "messages": fitted.messages}
            if use_tools:
                request["tools"] = tools.TOOLS
                if round_ == TOOL_ROUNDS or calls_run >= self.settings.ai_tool_calls_per_reply:
                    request["tool_choice"] = "none"  # enough looking: answer now
            sent = fitted.messages
            try:
                stream = self._open(run, deadline, **request)
            except _ToolsRefused:
                log.warning("the AI server refused tools for %s; answering without them from now on", model)
                use_tools = False
                steps.append({"kind": "fallback", "label": TOOLS_OFF.format(model=model)})
                if not self._steps(job, steps, reply):
                    break
                sent = fit(system, history, tail, budget).messages
                record_request(self.db, job.reply_id, sent, model)
                try:
                    stream = self._open(run, deadline, model=model, messages=sent)
                except _Ended as end:
                    self._fail(run, job, str(end), reply.text, reply.started)
                    return
                self._no_tools.add(model)  # the plain request was taken: this model takes no tools
            except _Ended as end:
                self._fail(run, job, str(end), reply.text, reply.started)
                return
            before = reply.mark()
            try:
                self._read(run, job, stream, reply, deadline)
            except _Ended as end:
                self._fail(run, job, str(end), reply.text, reply.started)
                return
            finally:
                stream.close()
                self._charge(job, model, sent, reply, before)  # every answered request, finished or not
            if reply.stopped or reply.finish_reason != "tool_calls" or not reply.calls:
                break
            said = reply.round_text  # what the model wrote before asking, kept with its calls
            calls = reply.take_calls()
            tail.append({"role": "assistant", "content": said or None, "tool_calls": calls})
            skipped = 0
            for index, call in enumerate(calls):
                name, raw = call["function"]["name"], call["function"]["arguments"]
                if reason := self._not_run(index, calls_run, room, deadline):
                    tail.append({"role": "tool", "tool_call_id": call["id"], "content": f"Error: {reason}"})
                    skipped += 1
                    continue
                step = self._use_tool(job, channel, name, raw, done_calls, steps, reply,
                                      min(int(budget * TOOL_RESULT_SHARE), room))
                calls_run += 1
                room -= estimate_tokens(step["output"])
                tail.append({"role": "tool", "tool_call_id": call["id"], "content": step["output"]})
            if skipped:
                steps.append({"kind": "fallback", "label": CAPPED.format(n=skipped)})
                self._steps(job, steps, reply)
            if reply.stopped:
                break
        self._finish(run, job, reply)

    def _not_run(self, index: int, calls_run: int, room: int, deadline: Deadline) -> str | None:
        """Why a tool call the model asked for is not run (a cap, the results' room, the deadline), or None."""
        if index >= self.settings.ai_tool_calls_per_round:
            return NOT_RUN_ROUND.format(n=self.settings.ai_tool_calls_per_round)
        if calls_run >= self.settings.ai_tool_calls_per_reply:
            return NOT_RUN_REPLY.format(n=self.settings.ai_tool_calls_per_reply)
        if room < RESULT_FLOOR:
            return NOT_RUN_ROOM
        if deadline.passed():
            return NOT_RUN_TIME
        return None

    def _charge(self, job: Job, model: str, sent: list[dict], reply: "_Reply", before: tuple) -> None:
        """Append one request's cost to the usage ledger: what the server reported for it, else an estimate."""
        try:
            prompt, completion, parts, arguments = before
            if reply.prompt_tokens != prompt or reply.completion_tokens != completion:
                use = usage.Use((reply.prompt_tokens or 0) - (prompt or 0),
                                (reply.completion_tokens or 0) - (completion or 0), False)
            else:
                use = usage.estimate(sent, "".join(reply.parts[parts:]) + reply.arguments[arguments:])
            usage.record(self.db, use, user_id=job.requested_by, reply_id=job.reply_id, job_id=job.id, model=model)
        except Exception:
            log.exception("could not record the usage of AI reply %d", job.reply_id)

    def _use_tool(self, job: Job, channel: Any, name: str, raw: str, done: dict, steps: list[dict],
                  reply: "_Reply", limit: int) -> dict:
        """Show the step line, run the tool (a repeat is answered from the first), keep the result on the reply."""
        key = (name, " ".join(raw.split()))
        try:
            shown = tools.label(name, tools.parse_arguments(name, raw), channel)
        except ChatError:
            shown = f"Using {name}…"
        steps.append({"kind": "tool", "tool": name, "arguments": raw, "label": shown, "state": "running"})
        self._steps(job, steps, reply)
        if key in done:
            step = {"kind": "tool", "tool": name, "arguments": raw, "label": shown, "state": "error",
                    "error": REPEATED_CALL, "output": f"Error: {REPEATED_CALL} Its result: {done[key]}"}
        else:
            step = tools.call(self.db, name, raw, channel)
            step["output"], cut = trim(step["output"], limit)
            if step["state"] == "done":
                done[key] = step["output"]
        steps[-1] = step
        self._steps(job, steps, reply)
        return step

    def _steps(self, job: Job, steps: list[dict], reply: "_Reply") -> bool:
        """Write the steps so far on the reply; False (and the reply counts as stopped) when a person stopped it."""
        if not record_steps(self.db, job, steps):
            reply.stopped = True
            return False
        return True

    def _open(self, run: _Run, deadline: Deadline, **request: Any) -> Any:
        """Start the stream, retrying what the SDK would retry, all within the deadline."""
        tries = 0
        while True:
            if deadline.passed():
                raise _Ended(NO_ANSWER.format(seconds=_seconds(deadline.seconds)))
            try:
                return self.client.chat.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}, timeout=max(deadline.left(), 0.01)
                )
            except openai.APIError as error:
                log.warning("AI request failed: %r", error)
                if isinstance(error, openai.BadRequestError) and "tools" in request:
                    raise _ToolsRefused() from None
                if deadline.passed() and isinstance(error, openai.APIConnectionError):
                    raise _Ended(NO_ANSWER.format(seconds=_seconds(deadline.seconds))) from None
                if tries >= RETRIES or not _retryable(error):
                    raise _Ended(self._explain(error, deadline, streamed=False)) from None
                wait = self._wait_before_retry(error, tries, deadline)
            tries += 1
            if run.abort.wait(wait):
                raise _Abandoned()

    def _wait_before_retry(self, error: openai.APIError, tries: int, deadline: Deadline) -> float:
        """Seconds to wait before the next try, or _Ended when that wait would cross the deadline."""
        response = getattr(error, "response", None)
        asked = _asked_wait(response.headers) if response is not None else None
        wait = asked if asked else min(FIRST_BACKOFF * 2**tries, MAX_BACKOFF) * (1 - 0.25 * random.random())
        if wait < deadline.left():
            return wait
        if not isinstance(error, openai.APIStatusError):
            raise _Ended(self._explain(error, deadline, streamed=False))
        what = "rate limit" if error.status_code == 429 else f"HTTP {error.status_code}"
        if asked and asked >= deadline.seconds:
            raise _Ended(BUSY_WAIT.format(what=what, wait=_seconds(asked), seconds=_seconds(deadline.seconds)))
        raise _Ended(BUSY_GAVE_UP.format(what=what, elapsed=_seconds(deadline.elapsed())))

    def _read(self, run: _Run, job: Job, stream: Any, reply: "_Reply", deadline: Deadline) -> None:
        """Pull chunks, writing the text so far at most every STREAM_WRITE_INTERVAL; stop if a person stopped it."""
        chunks = iter(stream)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except openai.APIError as error:  # e.g. the connection broke or the server sent an error event
                log.warning("AI stream failed: %r", error)
                if deadline.passed():  # the deadline cut the connection
                    raise _Ended(self._out_of_time(reply, deadline)) from None
                raise _Ended(self._explain(error, deadline, streamed=True)) from None
            except Exception as error:  # the SDK could not parse an event: the server's fault, not ours
                log.warning("AI stream sent an unreadable event: %r", error)
                raise _Ended(UNREADABLE) from None
            if run.abort.is_set():
                raise _Abandoned()
            try:
                reply.take(chunk)
            except (AttributeError, TypeError) as error:  # a chunk of an unexpected shape
                log.warning("AI stream sent an odd chunk: %r", error)
                raise _Ended(UNREADABLE) from None
            now = time.monotonic()
            if reply.parts and reply.first_at is None:
                reply.first_at = now
            if reply.unwritten and (reply.written_at is None or now - reply.written_at >= STREAM_WRITE_INTERVAL):
                if not stream_reply(self.db, job.reply_id, reply.text, job_id=job.id):
                    reply.stopped = True  # a person pressed Stop: pull no more chunks
                    return
                reply.written_at = time.monotonic()  # after the write, so writes stay an interval apart
                reply.written = len(reply.parts)
            if deadline.passed():
                raise _Ended(self._out_of_time(reply, deadline))

    @staticmethod
    def _out_of_time(reply: "_Reply", deadline: Deadline) -> str:
        return (TOO_SLOW if reply.parts else NO_ANSWER).format(seconds=_seconds(deadline.seconds))

    def _finish(self, run: _Run, job: Job, reply: "_Reply") -> None:
        if run.abort.is_set():
            raise _Abandoned()
        if reply.stopped:  # finish_reply leaves a stopped reply's text and state alone
            finish_reply(self.db, job, reply.text, ttft_ms=reply.ttft_ms, total_ms=reply.elapsed_ms())
            return
        if reply.finish_reason == "tool_calls":  # still asking after the last round: what it wrote is the answer
            reply.finish_reason = "stop" if reply.text.strip() else reply.finish_reason
        if reply.finish_reason != "stop":
            reason = {"tool_calls": ENDLESS_TOOLS,None: CLOSED, "length": CUT_OFF, "content_filter": FILTERED}.get(
                reply.finish_reason, ODD_FINISH.format(reason=reply.finish_reason)
            )
            self._fail(run, job, reason, reply.text, reply.started)
        elif not reply.text.strip():
            self._fail(run, job, EMPTY, "", reply.started)
        else:
            finish_reply(
                self.db,
                job,
                reply.text,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                ttft_ms=reply.ttft_ms,
                total_ms=reply.elapsed_ms(),
            )

    def _fail(self, run: _Run, job: Job, reason: str, text: str, started: float) -> None:
        if run.abort.is_set():
            raise _Abandoned()
        total_ms = (time.monotonic() - started) * 1000
        fail_reply(self.db, job, reason, content=text or None, total_ms=total_ms)

    def _explain(self, error: BaseException, deadline: Deadline, streamed: bool) -> str:
        return explain(
            error, host=self.host, timeout=deadline.seconds, model=self.settings.openai_model, streamed=streamed
        )


class _Reply:
    """A reply being streamed over one or more rounds: text so far, tool calls, finish reason, usage, timings."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[str] = []
        self.round_start = 0  # parts before this came from earlier rounds
        self.written = 0  # parts already written to the database
        self.written_at: float | None = None
        self.first_at: float | None = None
        self.finish_reason: str | None = None
        self.calls: dict[int, dict] = {}  # this round's tool calls by index, arguments joined from their pieces
        self.prompt_tokens: int | None = None  # summed over rounds, as the API reports them
        self.completion_tokens: int | None = None
        self.arguments = ""  # every tool call's arguments as received (what a request without usage is charged for)
        self.stopped = False

    def mark(self) -> tuple:
        """Where the next request starts: usage so far, text parts, tool-call arguments received."""
        return self.prompt_tokens, self.completion_tokens, len(self.parts), len(self.arguments)

    def take(self, chunk: Any) -> None:
        """Add one streamed chunk's text, tool-call pieces, finish reason and usage."""
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + (getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens = (self.completion_tokens or 0) + (getattr(usage, "completion_tokens", 0) or 0)
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            content = getattr(delta, "content", None) if delta is not None else None
            if content:
                self.parts.append(str(content))
            for piece in (getattr(delta, "tool_calls", None) or ()) if delta is not None else ():
                call = self.calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function is not None:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
                    self.arguments += piece.function.arguments or ""
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def take_calls(self) -> list[dict]:
        """This round's tool calls in the API's message form; the next round starts."""
        calls = [
            {"id": call["id"] or f"call_{index}", "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}}
            for index, call in sorted(self.calls.items())
        ]
        self.calls, self.finish_reason, self.round_start = {}, None, len(self.parts)
        return calls

    @property
    def round_text(self) -> str:
        return "".join(self.parts[self.round_start :])

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
