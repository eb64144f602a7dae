"""One deadline per AI reply, held by every network wait of the thread that answers it.

``with Deadline(seconds):`` marks the current thread; a client passed through ``hold_deadlines`` then caps each
connect, TLS handshake, send and receive of that thread at the time left, so a server that hangs before its
headers, between two chunks or in a half-open connection ends the wait at the deadline, whatever per-try
timeout the SDK was given. Threads without a deadline (or clients not passed through) keep the SDK's timeouts.

Why in the network layer: httpx reads each phase's timeout once per request (``read`` once for a whole
streamed body), so a per-try timeout alone lets a reply run past its deadline by up to one timeout per phase.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpcore2

log = logging.getLogger(__name__)

_current = threading.local()


class Deadline:
    """A moment, ``seconds`` after ``start`` (monotonic), by which a reply must have ended."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.monotonic() if start is None else start
        self.at = self.start + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __enter__(self) -> "Deadline":
        _current.deadline = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.deadline = None


def current() -> Deadline | None:
    """The deadline the calling thread works under, if any."""
    return getattr(_current, "deadline", None)


def _cap(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = current()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise expired("the reply's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore2.NetworkStream):
    """A connection whose every read and write ends by the deadline of the thread using it."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cap(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cap(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _cap(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore2.NetworkBackend):
    """Opens connections within the deadline and hands out streams that keep to it."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore2.NetworkStream:
        timeout = _cap(timeout, httpcore2.ConnectTimeout)
        return _Stream(self.inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        return _Stream(self.inner.connect_unix_socket(path, _cap(timeout, httpcore2.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def hold_deadlines(client: Any) -> bool:
    """Make an openai client's connections keep the calling thread's deadline; False if it cannot be done.

    Reaches into httpx2's transports (``_transport``, ``_mounts``) and httpcore2's pool (``_network_backend``):
    httpx2 has no public way to give a transport a network backend. A version that moves them makes this
    return False (logged), and the per-try timeouts still apply; tests/test_ai.py fails on it.
    """
    http = getattr(client, "_client", None)
    held = []
    for transport in [getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values()]:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore2.NetworkBackend) and not isinstance(backend, _Backend):
            pool._network_backend = _Backend(backend)
        held.append(isinstance(getattr(pool, "_network_backend", None), _Backend))
    if not held[0]:
        log.warning("cannot hold the AI reply deadline in this HTTP client; only per-try timeouts apply")
    return held[0]
