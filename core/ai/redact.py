"""Credentials never leave in words: URLs lose their ``user:password@`` part in messages and log records.

The server is named by host and port only (``host``). Every logger of this package (made with ``logger``) and the
SDK's and httpx2's loggers carry a filter that strips the ``user:password@`` of URLs in a record's message and
traceback before any handler sees it.
"""
from __future__ import annotations

import logging
import re
import traceback
from typing import Any
from urllib.parse import urlsplit

USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")  # the user:password@ of a URL
LIBRARY_LOGGERS = ("openai", "httpx2", "httpcore2")  # httpx2 logs every request's full URL at INFO


def safe_url(text: Any) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed (for messages and logs)."""
    return USERINFO.sub(r"\1", str(text))


def host(base_url: Any) -> str:
    """The server of a base URL as a person may read it: host and port, never its credentials."""
    parts = urlsplit(str(base_url))
    return parts.netloc.rpartition("@")[2] or safe_url(base_url)


class Redact(logging.Filter):
    """Strip credentials from URLs in a log record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if USERINFO.search(message):
            record.msg, record.args = safe_url(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = safe_url("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return True


def logger(name: str) -> logging.Logger:
    """The logger ``name`` with the redacting filter on (a logger's filters see only its own records)."""
    log = logging.getLogger(name)
    if not any(isinstance(f, Redact) for f in log.filters):
        log.addFilter(Redact())
    return log


for _name in LIBRARY_LOGGERS:
    logger(_name)
