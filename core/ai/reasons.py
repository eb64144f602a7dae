"""The words a person reads about an AI reply: every reason it ended, the steps it shows, SDK errors translated.

A refusal (HTTP 400) is told apart here, from the error's own code, parameter and text: one about the
``tools`` the request carried (``about_tools``), a conversation longer than the model's context
(``too_long``), or any other (shown with the server's own words, ``explain``).
"""
from __future__ import annotations

import re
from typing import Any

import openai

from core.ai.redact import safe_url

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
TOO_LONG = (
    "The conversation is too long for this model. Start a new channel, or ask an admin to raise the model's "
    "context size (or lower AI_CONTEXT_TOKENS)."
)
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
UNEXPECTED = "Something went wrong while writing the AI reply (the error was logged). Press Retry to try again."
DETAIL_MAX = 300  # characters of a server's own error text shown to a person

# How servers say a request is longer than the model's context: OpenAI's code, llama.cpp's error type, and the
# words of those that give neither (vLLM, LM Studio, proxies): "maximum context length is 4096 tokens", "exceeds
# the available context size", "prompt is too long".
CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
CONTEXT_WORDS = re.compile(
    r"(?i)context[ _](length|size|window)|maximum context|exceeds? the (available )?context|prompt is too long"
    r"|too many tokens"
)
# A refusal about the tools a request carried names them in its code or parameter (OpenAI: param "tools",
# "tools[0].function.parameters", "tool_choice"); servers that give neither say so in their words only
# (Ollama: "... does not support tools"; vLLM: '"auto" tool choice requires --enable-auto-tool-choice').
TOOLS_WORDS = re.compile(r"(?i)\btools?\b|tool[ _]choice|tool[ _]call|function")


def seconds(value: float) -> str:
    """Seconds as a person reads them: 8, 0.5, 7.4, 30."""
    return f"{round(value, 1):g}" if value < 10 else f"{round(value):g}"


def _message(error: openai.APIError) -> str:
    body = error.body
    text = body.get("message") if isinstance(body, dict) else None
    return text if isinstance(text, str) else ""


def _detail(error: openai.APIError) -> str:
    text = " ".join(safe_url(_message(error)).split())[:DETAIL_MAX]
    return f": {text}" if text else "."


def too_long(error: BaseException) -> bool:
    """Whether a refusal says the request is longer than the model's context."""
    if not isinstance(error, openai.BadRequestError):
        return False
    if {error.code, error.type} & CONTEXT_CODES:
        return True
    return bool(CONTEXT_WORDS.search(_message(error)))


def about_tools(error: BaseException) -> bool:
    """Whether a refusal is about the request's tools: its code or parameter names them (else its words do)."""
    if not isinstance(error, openai.BadRequestError) or too_long(error):
        return False
    named: list[Any] = [part for part in (error.code, error.param) if part and not str(part).isdigit()]
    if named:
        return any(TOOLS_WORDS.search(str(part)) for part in named)
    return bool(TOOLS_WORDS.search(_message(error)))


def explain(error: BaseException, *, host: str, timeout: float, model: str, streamed: bool) -> str:
    """A reason a person understands for an exception from the SDK (``streamed``: it broke mid-stream)."""
    if isinstance(error, openai.APITimeoutError):
        return (TOO_SLOW if streamed else NO_ANSWER).format(seconds=seconds(timeout))
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

