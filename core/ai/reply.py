"""One reply's flow: what the model is sent, its rounds of tool calls, the fallbacks, and how the reply ends.

What the model is sent (``core.context.fit``): the channel's persona, for a "look further back" channel a
system note of related older messages (``core.tools.look_back``), the recent messages within
``settings.ai_context_tokens`` (the newest always, cut with a marker if need be), and this reply's tool calls.
The model (the channel's own, else ``OPENAI_MODEL``) may call ``search_messages`` and ``read_messages``
(``core.tools``) for up to ``TOOL_ROUNDS`` rounds; each call is a step kept on the reply, written before it
runs, so every window shows what the AI is doing. At most ``settings.ai_tool_calls_per_round`` calls run
from one answer and ``settings.ai_tool_calls_per_reply`` over the reply, the deadline is checked before
each, and all results together take at most ``TOOL_RESULTS_SHARE`` of the budget; a call past a cap is
answered "Not run: ..." and shown as one step. Every request that got an answer (finished, broken or
stopped) is appended to the usage ledger (``core.usage``), charged to whoever asked for the attempt.

Fallbacks, each at most once a reply and all within its deadline:
* A refusal about ``tools`` (its code or parameter names them): the request goes once more without them, and
  that model gets no tools again in this process (``no_tools``, in memory).
* A context overflow (``context_length_exceeded``): the request goes once more fitted to half the budget; a
  second overflow ends the reply with ``TOO_LONG``. It never switches the tools off.
* A stream that broke (dropped, an unreadable event) or ended without a finish reason before any of its text
  came is opened once more, silently. After text came, the reply ends as an error keeping it.
A stream that ends without ``finish_reason == "stop"`` is otherwise an error that keeps its text; an empty
reply is an error, never an empty complete message.
"""
from __future__ import annotations

import time
from typing import Any

from core import tools, usage
from core.ai.reasons import (
    CAPPED,
    CLOSED,
    CUT_OFF,
    EMPTY,
    ENDLESS_TOOLS,
    FILTERED,
    NOT_RUN_REPLY,
    NOT_RUN_ROOM,
    NOT_RUN_ROUND,
    NOT_RUN_TIME,
    ODD_FINISH,
    REPEATED_CALL,
    TOO_LONG,
    TOOLS_OFF,
)
from core.ai.redact import logger
from core.ai.stream import Abandoned, Cut, Ended, Link, Reply, TooLong, ToolsRefused, open_stream, read
from core.channels import get_channel, system_prompt
from core.config import Settings
from core.context import (
    RETRIEVAL_SHARE,
    TOOL_RESULT_SHARE,
    TOOL_RESULTS_SHARE,
    estimate_tokens,
    fit,
    tools_tokens,
    trim,
)
from core.deadline import Deadline
from core.errors import ChatError
from core.jobs import Job
from core.messages import load_context
from core.replies import fail_reply, finish_reply, record_request, record_steps, stream_reply
from core.store import Database

log = logger(__name__)

TOOL_ROUNDS = 3  # rounds of tool calls a reply may make; the next round must answer (tool_choice "none")
RESULT_FLOOR = 64  # tokens: with less room than this left for results, a tool call is not run
SHRINK = 2  # a context overflow is tried once more with the budget divided by this


class Answer:
    """One attempt at one reply: ``run()`` streams it to its end, writing through ``core.replies``."""

    def __init__(self, db: Database, settings: Settings, link: Link, no_tools: set[str], job: Job,
                 deadline: Deadline) -> None:
        self.db, self.settings, self.link, self.job, self.deadline = db, settings, link, job, deadline
        self.no_tools = no_tools  # shared by every reply of the Responder: models whose server refused tools
        self.reply = Reply(time.monotonic())
        self.steps: list[dict] = []
        self.budget = settings.ai_context_tokens  # halved once by a context overflow
        self.room = int(self.budget * TOOL_RESULTS_SHARE)  # what all of this reply's tool results together may take
        self.use_tools = True
        self.retried = False  # the one silent retry of a stream cut before its text

    def run(self) -> None:
        """Answer the job's reply: complete, or an error with a readable reason (any text so far kept)."""
        job, reply = self.job, self.reply
        channel = get_channel(self.db, job.channel_id)
        model = channel.model or self.settings.openai_model
        history = load_context(self.db, job.channel_id, upto=job.trigger_id)
        system = [{"role": "system", "content": system_prompt(channel)}]
        if channel.look_back and history:
            note, step = tools.look_back(self.db, channel, job.trigger_id, int(self.budget * RETRIEVAL_SHARE))
            if note is not None:
                system.append(note)
                self.steps.append(step)
        self.use_tools = model not in self.no_tools
        tail: list[dict] = []  # this reply's tool calls and their results, sent with every later round
        done_calls: dict[tuple[str, str], str] = {}
        calls_run = 0
        try:
            for round_ in range(TOOL_ROUNDS + 1):
                answer_now = round_ == TOOL_ROUNDS or calls_run >= self.settings.ai_tool_calls_per_reply
                if not self._request(model, system, history, tail, answer_now):
                    break
                if reply.stopped or reply.finish_reason != "tool_calls" or not reply.calls:
                    break
                calls_run = self._run_calls(channel, tail, done_calls, calls_run)
                if reply.stopped:
                    break
        except Ended as end:
            self._fail(str(end), reply.text)
            return
        self._finish()

    def _request(self, model: str, system: list[dict], history: list[dict], tail: list[dict],
                 answer_now: bool) -> bool:
        """Send one round's request and read its answer (with the fallbacks); False when the reply was stopped."""
        refused = False  # the tools were refused: the request that is taken shows the model takes none
        sent: list[dict] | None = None
        while True:
            if sent is None:
                sent = self._fit(model, system, history, tail)
                if sent is None:
                    return False
            request: dict[str, Any] = {"model": model, "messages": sent}
            if self.use_tools:
                request["tools"] = tools.TOOLS
                if answer_now:
                    request["tool_choice"] = "none"  # enough looking: answer now
            try:
                stream = open_stream(self.link, self.deadline, **request)
            except TooLong:
                self._shrink(model)
                sent = None
                continue
            except ToolsRefused:
                log.warning("the AI server refused tools for %s; answering without them from now on", model)
                self.use_tools, refused, sent = False, True, None
                self.steps.append({"kind": "fallback", "label": TOOLS_OFF.format(model=model)})
                continue
            if refused:
                self.no_tools.add(model)  # the plain request was taken: this model takes no tools
            before = self.reply.mark()
            broke: Cut | None = None
            try:
                read(self.link, stream, self.reply, self.deadline, self._write)
            except Cut as cut:
                broke = cut
            finally:
                stream.close()
                self._charge(model, sent, before)  # every answered request, finished or not
            ended_early = broke is not None or (self.reply.finish_reason is None and not self.reply.stopped)
            if ended_early and self._try_again(before):
                continue
            if broke is not None:
                raise Ended(str(broke))
            return True

    def _fit(self, model: str, system: list[dict], history: list[dict], tail: list[dict]) -> list[dict] | None:
        """The messages of the next request within the budget, kept on the reply; None when it was stopped."""
        fixed = tools_tokens(tools.TOOLS) if self.use_tools else 0
        fitted = fit(system, history, tail, self.budget, fixed)
        self.steps = [s for s in self.steps if s.get("kind") != "budget"]
        if fitted.note():
            self.steps.append({"kind": "budget", "label": fitted.note(), "dropped": fitted.dropped})
        if self.steps and not self._write_steps():
            return None
        record_request(self.db, self.job.reply_id, fitted.messages, model)
        return fitted.messages

    def _shrink(self, model: str) -> None:
        """Halve the budget after a context overflow, once; a second overflow ends the reply with TOO_LONG."""
        if self.budget < self.settings.ai_context_tokens:
            raise Ended(TOO_LONG)
        old, self.budget = self.budget, self.budget // SHRINK
        self.room -= int(old * TOOL_RESULTS_SHARE) - int(self.budget * TOOL_RESULTS_SHARE)
        log.warning("AI reply %d was too long for %s; trying once more within %d tokens",
                    self.job.reply_id, model, self.budget)

    def _try_again(self, before: tuple) -> bool:
        """Whether a stream that ended early is opened once more: no text of it came, and time is left."""
        if self.retried or self.reply.text_since(before) or self.reply.stopped or self.deadline.passed():
            return False
        self.retried = True
        self.reply.drop_request()
        log.warning("the AI stream of reply %d ended before any text; trying once more", self.job.reply_id)
        return True

    def _run_calls(self, channel: Any, tail: list[dict], done: dict, calls_run: int) -> int:
        """Run the tool calls the model asked for (within the caps), append them and their results to ``tail``."""
        reply = self.reply
        said = reply.round_text  # what the model wrote before asking, kept with its calls
        calls = reply.take_calls()
        tail.append({"role": "assistant", "content": said or None, "tool_calls": calls})
        skipped = 0
        for index, call in enumerate(calls):
            name, raw = call["function"]["name"], call["function"]["arguments"]
            if reason := self._not_run(index, calls_run):
                tail.append({"role": "tool", "tool_call_id": call["id"], "content": f"Error: {reason}"})
                skipped += 1
                continue
            step = self._use_tool(channel, name, raw, done, min(int(self.budget * TOOL_RESULT_SHARE), self.room))
            calls_run += 1
            self.room -= estimate_tokens(step["output"])
            tail.append({"role": "tool", "tool_call_id": call["id"], "content": step["output"]})
        if skipped:
            self.steps.append({"kind": "fallback", "label": CAPPED.format(n=skipped)})
            self._write_steps()
        return calls_run

    def _not_run(self, index: int, calls_run: int) -> str | None:
        """Why a tool call the model asked for is not run (a cap, the results' room, the deadline), or None."""
        if index >= self.settings.ai_tool_calls_per_round:
            return NOT_RUN_ROUND.format(n=self.settings.ai_tool_calls_per_round)
        if calls_run >= self.settings.ai_tool_calls_per_reply:
            return NOT_RUN_REPLY.format(n=self.settings.ai_tool_calls_per_reply)
        if self.room < RESULT_FLOOR:
            return NOT_RUN_ROOM
        if self.deadline.passed():
            return NOT_RUN_TIME
        return None

    def _use_tool(self, channel: Any, name: str, raw: str, done: dict, limit: int) -> dict:
        """Show the step line, run the tool (a repeat is answered from the first), keep the result on the reply."""
        key = (name, " ".join(raw.split()))
        try:
            shown = tools.label(name, tools.parse_arguments(name, raw), channel)
        except ChatError:
            shown = f"Using {name}…"
        self.steps.append({"kind": "tool", "tool": name, "arguments": raw, "label": shown, "state": "running"})
        self._write_steps()
        if key in done:
            step = {"kind": "tool", "tool": name, "arguments": raw, "label": shown, "state": "error",
                    "error": REPEATED_CALL, "output": f"Error: {REPEATED_CALL} Its result: {done[key]}"}
        else:
            step = tools.call(self.db, name, raw, channel)
            step["output"], cut = trim(step["output"], limit)
            if step["state"] == "done":
                done[key] = step["output"]
        self.steps[-1] = step
        self._write_steps()
        return step

    def _charge(self, model: str, sent: list[dict], before: tuple) -> None:
        """Append one request's cost to the usage ledger: what the server reported for it, else an estimate."""
        reply, job = self.reply, self.job
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

    def _write(self, text: str) -> bool:
        """Write the text so far on the reply; False when a person stopped it (or Retry superseded this attempt)."""
        return stream_reply(self.db, self.job.reply_id, text, job_id=self.job.id)

    def _write_steps(self) -> bool:
        """Write the steps so far on the reply; False (and the reply counts as stopped) when a person stopped it."""
        if not record_steps(self.db, self.job, self.steps):
            self.reply.stopped = True
            return False
        return True

    def _finish(self) -> None:
        job, reply = self.job, self.reply
        if self.link.abort.is_set():
            raise Abandoned()
        if reply.stopped:  # finish_reply leaves a stopped reply's text and state alone
            finish_reply(self.db, job, reply.text, ttft_ms=reply.ttft_ms, total_ms=reply.elapsed_ms())
            return
        if reply.finish_reason == "tool_calls":  # still asking after the last round: what it wrote is the answer
            reply.finish_reason = "stop" if reply.text.strip() else reply.finish_reason
        if reply.finish_reason != "stop":
            reason = {"tool_calls": ENDLESS_TOOLS, None: CLOSED, "length": CUT_OFF, "content_filter": FILTERED}.get(
                reply.finish_reason, ODD_FINISH.format(reason=reply.finish_reason)
            )
            self._fail(reason, reply.text)
        elif not reply.text.strip():
            self._fail(EMPTY, "")
        else:
            finish_reply(self.db, job, reply.text, prompt_tokens=reply.prompt_tokens,
                         completion_tokens=reply.completion_tokens, ttft_ms=reply.ttft_ms, total_ms=reply.elapsed_ms())

    def _fail(self, reason: str, text: str) -> None:
        if self.link.abort.is_set():
            raise Abandoned()
        total_ms = (time.monotonic() - self.reply.started) * 1000
        fail_reply(self.db, self.job, reason, content=text or None, total_ms=total_ms)
