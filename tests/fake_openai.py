"""A local, OpenAI-compatible HTTP test server (standard library only).

Usage::

    from fake_openai import FakeOpenAI, Script

    with FakeOpenAI() as fake:
        fake.push(Script(text="Hi there!", chunk_delay=0.05))
        client = fake.client(max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert fake.requests[0]["messages"][0]["content"] == "hi"

The server speaks real HTTP/1.1 on 127.0.0.1 (random free port), so the real
``openai`` SDK (and its retry / timeout / streaming machinery) is exercised
unpatched.

Endpoints
---------
* ``POST /v1/chat/completions`` -- answered from the script queue (see ``Script``).
  ``"stream": true`` -> ``text/event-stream`` with chunked transfer encoding,
  exactly like OpenAI (role chunk, content chunks, finish chunk, optional usage
  chunk when ``stream_options.include_usage`` is true, then ``data: [DONE]``).
  Otherwise a normal ``chat.completion`` JSON object with usage.
  ``Script.tool_calls`` streams tool calls as OpenAI does (id, name, then the
  arguments in pieces, finish reason ``tool_calls``); ``FakeOpenAI.reject_tools``
  answers 400 to every request carrying ``tools`` (as many local servers do), with OpenAI's body for
  it (``param: "tools"``, ``code: "unsupported_parameter"``); ``FakeOpenAI.context_limit`` answers 400
  ``context_length_exceeded`` (OpenAI's body) to every request whose messages hold more words than that,
  as a model with a small context does. Neither uses a script. A scripted error status may carry its own
  ``error_message``, ``error_code`` and ``error_param``.
* ``POST /v1/embeddings`` -- deterministic vectors (``embed``: hashed words, unit
  length; ``dimensions`` honoured; float lists or base64, as asked), recorded in
  ``FakeOpenAI.embedding_requests``; no script involved. ``FakeOpenAI.embeddings_status``
  plays a server without embeddings: 404 (no such endpoint, the body any unknown path gets) or
  405 (``Method Not Allowed``, as servers that route only ``GET`` there answer), or any other
  status (500: a server that fails for now) with an OpenAI-style error body.
* ``GET /v1/models`` and ``GET /v1/models/{id}`` -- a small static model list.
* anything else -> 404 with an OpenAI-style JSON error body.

Behaviour notes for users of openai 3.52.0 (verified by tests/test_fake_openai.py):
* The SDK retries 408/409/429/>=500 itself (``max_retries``, default 2) and
  honours ``Retry-After`` when ``0 < value <= 120`` seconds.  ``Retry-After: 0``
  (or no header) falls back to exponential back-off starting at ~0.5 s, so set
  ``Script.retry_after`` to something small (e.g. 0.01) to keep tests fast.
* A stream cut with ``Script.cut_after`` (socket shut down in the middle of the
  chunked body, no finish_reason, no ``[DONE]``) makes iteration RAISE
  ``openai.APIConnectionError`` (cause: ``httpx2.RemoteProtocolError``, "peer
  closed connection without sending complete message body: incomplete chunked
  read") after the chunks that did arrive have been yielded.  It does NOT end
  silently -- but a consumer that only looks for ``finish_reason`` would still
  need to handle the exception.
* ``Script.end_after``: the stream ends cleanly after this many content chunks (``[DONE]``, a complete
  body) but without the finish-reason chunk or usage, as a proxy that truncates does: iteration simply
  stops, no exception -- only the missing ``finish_reason`` tells.
* ``Script.malformed_after``: one SSE event whose data is not JSON makes iteration
  raise ``json.JSONDecodeError`` (not an ``openai`` error) after the earlier chunks.
* ``Script.error_after``: an ``event: error`` whose data is ``{"error": {...}}``
  makes iteration raise ``openai.APIError`` with the error's message, body = the
  error object.
* ``Script.hang``, or a ``status`` of 429/503 with a ``retry_after`` larger than
  a deadline, are what a reply's deadline must hold against (the SDK itself
  sleeps out any Retry-After up to 120 s between its retries).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI", "Script", "embed", "split_words"]


_WORD_RE = re.compile(r"\s*\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """Split ``text`` into ~word-sized pieces, keeping all whitespace.

    ``"".join(split_words(t)) == t`` for every string ``t``.  Leading
    whitespace sticks to the first word, trailing whitespace to the word before it.
    """
    return _WORD_RE.findall(text)


@dataclass
class Script:
    """How the fake server answers one (or ``repeat``) chat-completion requests."""

    text: str = "Hello from the fake model."  # reply text
    # explicit stream chunks; default: ``split_words(text)`` ("".join(chunks) == text)
    chunks: list[str] | None = None
    delay: float = 0.0  # seconds before the response headers / first byte
    chunk_delay: float = 0.0  # seconds between stream content chunks
    # != 200 -> OpenAI-style JSON error body {"error": {"message", "type", "param", "code"}}
    status: int = 200
    retry_after: float | None = None  # Retry-After header (seconds) on error responses
    hang: bool = False  # accept the request, never answer (until server stop)
    # streaming only: send this many content chunks, then close the socket
    # abruptly (no finish_reason chunk, no usage chunk, no [DONE])
    cut_after: int | None = None
    # streaming only: after this many content chunks, one event whose data is not valid JSON, then the rest
    malformed_after: int | None = None
    # streaming only: after this many content chunks, an ``event: error`` with an OpenAI error body, then the
    # stream ends (no finish_reason, no usage, ``[DONE]``), as OpenAI reports a failure mid-stream
    error_after: int | None = None
    # the error's message: in that error event ("fake-openai: the model failed mid-stream" when None), or in the
    # body of an error ``status`` (a "simulated HTTP ..." text when None); a status error may also name its own
    # ``code`` and ``param`` (None: the usual code of that status, no param)
    error_message: str | None = None
    error_code: str | None = None
    error_param: str | None = None
    # streaming only: after this many content chunks, end the stream cleanly ([DONE]) without a finish reason
    end_after: int | None = None
    # streaming only: ask for these tool calls after the text, as OpenAI does: each {"name": ..., "arguments":
    # "<JSON text>"} (optional "id"), the arguments split across chunks of ``tool_chunk`` characters; the
    # finish reason is then "tool_calls"
    tool_calls: list[dict] | None = None
    tool_chunk: int = 7
    finish_reason: str = "stop"  # finish reason on the last chunk / in the choice
    repeat: int = 1  # how many requests this script serves before the next queued one

    def stream_chunks(self) -> list[str]:
        """The content deltas this script streams (``chunks`` or ``text`` split into words)."""
        return list(self.chunks) if self.chunks is not None else split_words(self.text)

    def reply_text(self) -> str:
        """Full reply text (for non-stream answers): ``"".join(chunks)`` if chunks were given."""
        return "".join(self.chunks) if self.chunks is not None else self.text


# --------------------------------------------------------------------------- helpers

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "timeout"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def _error_body(status: int, message: str | None = None, code: str | None = None,
                param: str | None = None) -> dict[str, Any]:
    err_type, usual = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    code = code or usual
    return {
        "error": {
            "message": message or f"fake-openai: simulated HTTP {status} ({code or err_type})",
            "type": err_type,
            "param": param,
            "code": code,
        }
    }


# What OpenAI answers to a model that takes no tools, and to a request longer than the model's context.
TOOLS_REFUSAL = ("Unsupported parameter: 'tools' is not supported with this model.", "unsupported_parameter", "tools")
CONTEXT_REFUSAL = (
    "This model's maximum context length is {limit} tokens. However, your messages resulted in {tokens} tokens "
    "(including tokens in the tools). Please reduce the length of the messages or functions.",
    "context_length_exceeded",
    "messages",
)


def _count_tokens(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            total += _count_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += _count_tokens(part["text"])
    return total


_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "fake-model"]
EMBEDDING_DIMENSIONS = 1536  # text-embedding-3-small's size when no "dimensions" is asked for


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's embedding of ``text``: hashed lower-cased words, unit length (same text, same vector).

    Texts sharing words point the same way, so nearest-neighbour search over these vectors behaves
    like a (crude) semantic search; a text without words gets a fixed unit vector.
    """
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]

_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError)


class _Abort(Exception):
    """Internal: stop handling this connection without writing anything more."""


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for (possibly hanging) handler threads
    allow_reuse_address = True

    fake: "FakeOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:  # keep quiet
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive + chunked transfer encoding
    disable_nagle_algorithm = True  # small SSE writes go out immediately
    server: _Server

    # ---- plumbing -----------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except _CLIENT_GONE:
            pass
        finally:
            self.server.fake._track(self.connection, add=False)

    def handle(self) -> None:
        try:
            super().handle()
        except (_Abort, *_CLIENT_GONE):
            self.close_connection = True

    @property
    def _fake(self) -> "FakeOpenAI":
        return self.server.fake

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
            return bytes(data)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up (and abort) immediately when the server stops."""
        if seconds > 0 and self._fake._stopping.wait(seconds):
            raise _Abort()
        if self._fake._stopping.is_set():
            raise _Abort()

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Abort()

    # ---- routing ------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        now = int(time.time())
        if path == "/v1/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": now, "owned_by": "fake-openai"} for m in _MODELS],
                },
            )
        elif path.startswith("/v1/models/"):
            model = path[len("/v1/models/") :]
            self._send_json(200, {"id": model, "object": "model", "created": now, "owned_by": "fake-openai"})
        else:
            self._not_found()

    def do_POST(self) -> None:
        raw = self._read_body()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            self._not_found()
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            self._send_json(400, _error_body(400, f"fake-openai: could not parse JSON body: {exc}"))
            return
        if path == "/v1/embeddings":
            self._embeddings(body)
            return

        self._fake._record(body)  # record BEFORE answering (also for error / hang scripts)
        if self._fake.reject_tools and body.get("tools"):
            # as many local model servers do: the request is refused, no script is used
            self._send_json(400, _error_body(400, *TOOLS_REFUSAL))
            return
        limit, tokens = self._fake.context_limit, _prompt_tokens(body)
        if limit is not None and tokens > limit:
            message, code, param = CONTEXT_REFUSAL
            self._send_json(400, _error_body(400, message.format(limit=limit, tokens=tokens), code, param))
            return
        script = self._fake._next_script()

        if script.hang:
            self._fake._stopping.wait()  # released by FakeOpenAI.stop()
            self._cut()

        self._sleep(script.delay)

        if script.status != 200:
            headers = {}
            if script.retry_after is not None:
                headers["Retry-After"] = f"{script.retry_after:g}"
            body = _error_body(script.status, script.error_message, script.error_code, script.error_param)
            self._send_json(script.status, body, headers)
            return

        if body.get("stream"):
            self._stream(body, script)
        else:
            self._complete(body, script)

    def do_PUT(self) -> None:
        self._read_body()
        self._not_found()

    do_DELETE = do_PATCH = do_PUT

    def _not_found(self) -> None:
        self._send_json(404, _error_body(404, f"fake-openai: unknown endpoint {self.command} {self.path}"))

    # ---- chat completions ---------------------------------------------------------

    def _complete(self, body: dict[str, Any], script: Script) -> None:
        text = script.reply_text()
        prompt = _prompt_tokens(body)
        completion = _count_tokens(text)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or "fake-model",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                        "logprobs": None,
                        "finish_reason": script.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        )

    def _write_chunk(self, data: bytes) -> None:
        # one write per HTTP chunk so the client sees it immediately
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, body: dict[str, Any], script: Script) -> None:
        chunks = script.stream_chunks()
        stream_options = body.get("stream_options") or {}
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or "fake-model",
            "system_fingerprint": "fp_fake",
        }

        def event(delta: dict[str, Any], finish_reason: str | None) -> None:
            payload = dict(base)
            payload["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            if include_usage:
                payload["usage"] = None  # OpenAI sends usage: null on every chunk but the last
            self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()

        event({"role": "assistant", "content": "", "refusal": None}, None)
        for i, piece in enumerate(chunks):
            if script.cut_after is not None and i >= script.cut_after:
                self._cut()
            if i == script.malformed_after:
                self._write_chunk(b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "oops\n\n')
            if i == script.error_after:
                self._error_event(script)
                return
            if i == script.end_after:
                self._end()
                return
            if i > 0:
                self._sleep(script.chunk_delay)
            at = time.time()  # taken before the write: the client cannot have the piece any earlier
            event({"content": piece}, None)
            self._fake._sent(at, piece)
        if script.cut_after is not None:
            self._cut()  # cut_after >= len(chunks): everything sent, but no finish / [DONE]
        if script.error_after is not None:
            self._error_event(script)  # error_after >= len(chunks): after every chunk
            return
        if script.end_after is not None:
            self._end()  # end_after >= len(chunks): every chunk, but no finish reason
            return

        finish_reason = script.finish_reason
        for index, call in enumerate(script.tool_calls or ()):
            arguments = call.get("arguments", "")
            pieces = [arguments[i : i + script.tool_chunk] for i in range(0, len(arguments), script.tool_chunk)]
            self._sleep(script.chunk_delay)
            first = {"index": index, "id": call.get("id") or f"call_{uuid.uuid4().hex[:20]}", "type": "function",
                     "function": {"name": call["name"], "arguments": ""}}
            event({"tool_calls": [first]}, None)
            for piece in pieces:  # later deltas carry only the index and a piece of the arguments
                event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
            finish_reason = "tool_calls" if script.finish_reason == "stop" else script.finish_reason

        self._sleep(script.chunk_delay if chunks else 0)
        event({}, finish_reason)
        if include_usage:
            prompt = _prompt_tokens(body)
            completion = _count_tokens("".join(chunks))
            payload = dict(base)
            payload["choices"] = []
            payload["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self._end()

    def _end(self) -> None:
        """``[DONE]`` and the end of the chunked body: the stream ends cleanly."""
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _embeddings(self, body: dict[str, Any]) -> None:
        self._fake._record_embedding(body)
        status = self._fake.embeddings_status
        if status == 404:  # as a server with no such endpoint: what every unknown path gets
            self._not_found()
            return
        if status == 405:  # as a server that routes only GET there (FastAPI's body)
            self._send_json(405, {"detail": "Method Not Allowed"}, {"Allow": "GET"})
            return
        if status != 200:
            self._send_json(status, _error_body(status))
            return
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._send_json(400, _error_body(400, "fake-openai: input must be a string or a list of strings"))
            return
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embed(text, int(dimensions))
            if base64_wanted:  # what the SDK asks for by default: little-endian float32, base64
                encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(_count_tokens(t) for t in texts)
        self._send_json(200, {"object": "list", "data": data, "model": body.get("model") or "text-embedding-3-small",
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _error_event(self, script: Script) -> None:
        body = _error_body(500, script.error_message or "fake-openai: the model failed mid-stream")
        self._write_chunk(b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n")
        self._end()


# --------------------------------------------------------------------------- public API


class FakeOpenAI:
    """OpenAI-compatible HTTP server on 127.0.0.1 serving scripted chat completions."""

    def __init__(self, default: Script | None = None):
        self.default: Script = default if default is not None else Script()
        self.requests: list[dict] = []
        self.chunks_sent: list[tuple[float, str]] = []  # (time.time(), content) of each streamed piece, as written
        self.embedding_requests: list[dict] = []  # bodies sent to /v1/embeddings
        self.embedding_times: list[float] = []  # time.monotonic() of each, as it arrived
        self.reject_tools = False  # True: answer 400 to any chat request that carries "tools"
        self.context_limit: int | None = None  # words of messages above which a request is refused as too long
        self.embeddings_status = 200  # 404 / 405: a server without embeddings; 500: one failing for now
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[list[Any]] = deque()  # [script, remaining uses]
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases hanging / delayed handlers
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # wake handlers blocked reading idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() first")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- scripting ----------------------------------------------------------------

    def push(self, *scripts: Script) -> None:
        """Queue scripts; each request consumes the next one (``repeat`` times)."""
        with self._lock:
            for s in scripts:
                self._queue.append([s, max(1, int(s.repeat))])

    def reset(self) -> None:
        """Forget queued scripts and recorded requests (handy for a shared server)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.chunks_sent.clear()
            self.embedding_requests.clear()
            self.embedding_times.clear()
            self.reject_tools = False
            self.context_limit = None
            self.embeddings_status = 200

    @property
    def pending(self) -> int:
        """How many requests the queued scripts will still serve."""
        with self._lock:
            return sum(remaining for _, remaining in self._queue)

    def _next_script(self) -> Script:
        with self._lock:
            if not self._queue:
                return self.default
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._queue.popleft()
            return entry[0]

    # ---- request log --------------------------------------------------------------

    def _record(self, body: dict) -> None:
        with self._cond:
            self.requests.append(body)
            self._cond.notify_all()

    def _sent(self, at: float, piece: str) -> None:
        with self._lock:
            self.chunks_sent.append((at, piece))

    def _record_embedding(self, body: dict) -> None:
        with self._lock:
            self.embedding_requests.append(body)
            self.embedding_times.append(time.monotonic())

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def wait_requests(self, n: int, timeout: float = 10) -> list[dict]:
        """Block until at least ``n`` chat-completion requests arrived; return a copy of all.

        Raises ``TimeoutError`` if fewer than ``n`` arrive within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} request(s) within {timeout}s, got {len(self.requests)}")
            return list(self.requests)

    # ---- convenience --------------------------------------------------------------

    def client(self, **kw: Any):
        """``openai.OpenAI(api_key="test-key", base_url=self.base_url, **kw)``."""
        import openai

        kw.setdefault("api_key", "test-key")
        kw.setdefault("base_url", self.base_url)
        return openai.OpenAI(**kw)
