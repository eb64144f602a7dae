"""One request to the AI service: open its stream (retrying what the SDK would), read its chunks into a Reply.

The deadline (``settings.ai_timeout``, ``AI_TIMEOUT_SECONDS``) is one cap on the whole reply, from the moment
its job is claimed to its last chunk, across retries and waits:
* Every network wait of the worker (connect, send, the wait for headers, each read of the stream) ends at the
  deadline (``core.deadline``); each try is also given the time left as its timeout.
* ``open_stream`` retries 408/409/429/5xx, timeouts and failed connections itself (``RETRIES`` times; the SDK's
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
A drop and an unreadable event raise ``Cut``, which the reply's flow may try once more when no text had come.
A refusal (400) of the request raises ``TooLong`` (the context) or ``ToolsRefused`` (the tools), for the flow
to shrink the request or send it without tools.
"""
from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import openai

from core.ai.reasons import (
    BUSY_GAVE_UP,
    BUSY_WAIT,
    NO_ANSWER,
    TOO_SLOW,
    UNREADABLE,
    about_tools,
    explain,
    seconds,
    too_long,
)
from core.ai.redact import logger
from core.deadline import Deadline

log = logger(__name__)

STREAM_WRITE_INTERVAL = 0.25  # seconds between text writes: smooth to read, and 4 writes/s instead of one per token
RETRIES = 2  # retries of 408/409/429/5xx, timeouts and failed connections, as many as the SDK's default
FIRST_BACKOFF = 0.5  # seconds before the first retry when the server names no wait; doubles each time (the SDK's)
MAX_BACKOFF = 8.0  # seconds: the SDK's cap on its backoff
RETRYABLE = (408, 409, 429)  # and every 5xx: the statuses the SDK retries


class Abandoned(Exception):
    """The Responder is stopping: leave the job for recover_interrupted, write nothing more."""


class Ended(Exception):
    """The reply ends as an error with this readable reason (the text so far is kept)."""


class Cut(Ended):
    """The stream broke (a dropped connection, an unreadable event): worth one more try if no text had come."""


class ToolsRefused(Exception):
    """The server answered 400 about the tools the request carried: try once without them."""


class TooLong(Exception):
    """The server answered 400: the request is longer than the model's context."""


@dataclass(frozen=True)
class Link:
    """The AI service as a reply reaches it: the client, its host (for reasons), the model named in a 404, the abort."""

    client: Any
    host: str
    model: str
    abort: threading.Event  # set by stop(): end at the next chunk or retry wait, writing nothing more

    def explain(self, error: BaseException, deadline: Deadline, streamed: bool) -> str:
        return explain(error, host=self.host, timeout=deadline.seconds, model=self.model, streamed=streamed)


def asked_wait(headers: Any) -> float | None:
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


def retryable(error: openai.APIError) -> bool:
    """Whether a try that failed this way is worth another, as the SDK decides."""
    if isinstance(error, openai.APIConnectionError):  # timeouts included
        return True
    if not isinstance(error, openai.APIStatusError):
        return False
    should = error.response.headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return error.status_code in RETRYABLE or error.status_code >= 500


def open_stream(link: Link, deadline: Deadline, **request: Any) -> Any:
    """Start the stream, retrying what the SDK would retry, all within the deadline."""
    tries = 0
    while True:
        if deadline.passed():
            raise Ended(NO_ANSWER.format(seconds=seconds(deadline.seconds)))
        try:
            return link.client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}, timeout=max(deadline.left(), 0.01)
            )
        except openai.APIError as error:
            log.warning("AI request failed: %r", error)
            if too_long(error):
                raise TooLong() from None
            if "tools" in request and about_tools(error):
                raise ToolsRefused() from None
            if deadline.passed() and isinstance(error, openai.APIConnectionError):
                raise Ended(NO_ANSWER.format(seconds=seconds(deadline.seconds))) from None
            if tries >= RETRIES or not retryable(error):
                raise Ended(link.explain(error, deadline, streamed=False)) from None
            wait = _wait_before_retry(link, error, tries, deadline)
        tries += 1
        if link.abort.wait(wait):
            raise Abandoned()


def _wait_before_retry(link: Link, error: openai.APIError, tries: int, deadline: Deadline) -> float:
    """Seconds to wait before the next try, or Ended when that wait would cross the deadline."""
    response = getattr(error, "response", None)
    asked = asked_wait(response.headers) if response is not None else None
    wait = asked if asked else min(FIRST_BACKOFF * 2**tries, MAX_BACKOFF) * (1 - 0.25 * random.random())
    if wait < deadline.left():
        return wait
    if not isinstance(error, openai.APIStatusError):
        raise Ended(link.explain(error, deadline, streamed=False))
    what = "rate limit" if error.status_code == 429 else f"HTTP {error.status_code}"
    if asked and asked >= deadline.seconds:
        raise Ended(BUSY_WAIT.format(what=what, wait=seconds(asked), seconds=seconds(deadline.seconds)))
    raise Ended(BUSY_GAVE_UP.format(what=what, elapsed=seconds(deadline.elapsed())))


def read(link: Link, stream: Any, reply: Reply, deadline: Deadline, write: Callable[[str], bool]) -> None:
    """Pull chunks, writing the text so far at most every STREAM_WRITE_INTERVAL; stop if a person stopped it.

    ``write`` stores the text so far and answers False when a person pressed Stop.
    """
    chunks = iter(stream)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except openai.APIError as error:  # e.g. the connection broke or the server sent an error event
            log.warning("AI stream failed: %r", error)
            if deadline.passed():  # the deadline cut the connection
                raise Ended(out_of_time(reply, deadline)) from None
            reason = link.explain(error, deadline, streamed=True)
            if isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError):
                raise Cut(reason) from None
            raise Ended(reason) from None
        except Exception as error:  # the SDK could not parse an event: the server's fault, not ours
            log.warning("AI stream sent an unreadable event: %r", error)
            raise Cut(UNREADABLE) from None
        if link.abort.is_set():
            raise Abandoned()
        try:
            reply.take(chunk)
        except (AttributeError, TypeError) as error:  # a chunk of an unexpected shape
            log.warning("AI stream sent an odd chunk: %r", error)
            raise Cut(UNREADABLE) from None
        now = time.monotonic()
        if reply.parts and reply.first_at is None:
            reply.first_at = now
        if reply.unwritten and (reply.written_at is None or now - reply.written_at >= STREAM_WRITE_INTERVAL):
            if not write(reply.text):
                reply.stopped = True  # a person pressed Stop: pull no more chunks
                return
            reply.written_at = time.monotonic()  # after the write, so writes stay an interval apart
            reply.written = len(reply.parts)
        if deadline.passed():
            raise Ended(out_of_time(reply, deadline))


def out_of_time(reply: Reply, deadline: Deadline) -> str:
    return (TOO_SLOW if reply.parts else NO_ANSWER).format(seconds=seconds(deadline.seconds))


class Reply:
    """A reply being streamed over one or more requests: text so far, tool calls, finish reason, usage, timings."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[str] = []
        self.round_start = 0  # parts before this came from earlier rounds
        self.written = 0  # parts already written to the database
        self.written_at: float | None = None
        self.first_at: float | None = None
        self.finish_reason: str | None = None
        self.calls: dict[int, dict] = {}  # this round's tool calls by index, arguments joined from their pieces
        self.prompt_tokens: int | None = None  # summed over requests, as the API reports them
        self.completion_tokens: int | None = None
        self.arguments = ""  # every tool call's arguments as received (what a request without usage is charged for)
        self.stopped = False

    def mark(self) -> tuple:
        """Where the next request starts: usage so far, text parts, tool-call arguments received."""
        return self.prompt_tokens, self.completion_tokens, len(self.parts), len(self.arguments)

    def text_since(self, mark: tuple) -> bool:
        """Whether any text came since ``mark`` (a request's text is kept once it came)."""
        return len(self.parts) > mark[2]

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

    def drop_request(self) -> None:
        """Forget what a broken request sent besides text (it sent none): its tool-call pieces and finish reason."""
        self.calls, self.finish_reason = {}, None

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
