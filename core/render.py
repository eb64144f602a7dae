"""Make a message's Markdown safe to show: no automatic fetches from other hosts, no live non-web links.

Streamlit renders a message with ``st.markdown`` (HTML off, so raw HTML stays text). Two things still
reach the network or run something when a message is merely shown:

* an image, ``![alt](https://elsewhere/pixel.png)``: every viewer's browser fetches it, so its owner
  learns who reads the channel, when and from where;
* a link with a scheme other than http(s)/mailto: Streamlit neutralises only ``javascript:`` and
  ``vbscript:``; ``data:``, ``file:`` and the like stay live.

``message_markdown`` rewrites the Markdown source, never parsing it fully: it looks at every place a
URL can start (after ``](`` in an inline link or image, after ``]:`` in a reference definition, after
``<`` in an autolink) and decides on the destination as the browser would read it (escapes and
character references decoded, tabs and control characters dropped). So a construct this module fails
to recognise is still neutralised wherever a browser would see a URL; the cost of doubt is a backslash
shown inside a code span, never a live link.
"""
from __future__ import annotations

import functools
import html
import re
from typing import Collection
from urllib.parse import urlsplit

LINK_SCHEMES = frozenset({"http", "https", "mailto"})  # the web and e-mail; every other scheme is dead text
IMAGE_SCHEMES = frozenset({"http", "https"})
IMAGE_LABEL = ":material/image:"  # an image shown as a link gets this icon before its alt text
DESTINATION_PEEK = 128  # characters of a destination read to find its scheme (a scheme is short; padding is not)
SCHEME_MIN_SEEN = 40  # a destination cut at the peek must show this much real text, else it counts as dead
DECODE_BUDGET = 500  # destinations per message decoded in full (escapes, "&#..;"); past it, any that needs decoding is dead
CACHED_CHARS = 32_768  # messages up to this size are remembered once rendered (a page redraws them every second)

_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash escapes ASCII punctuation
_SCHEME_UNSURE = frozenset("&\\") | frozenset(map(chr, range(0x21))) | {"\x7f"}  # may hide a scheme: decode first
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]")  # browsers drop tabs and newlines in URLs and trim controls/space
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):", re.IGNORECASE)
_URL_STARTS = re.compile(r"\][(:]|<(?=[A-Za-z])")  # where a link destination or an autolink begins
# What may come before a destination's first character: spaces, one line break, and on the next line the ">" markers of
# the block quotes it continues ("> [a](\n> data:...)" is one link inside a quote).
_DESTINATION_LEAD = re.compile(r"[ \t]*(?:(?:\r\n|\r|\n)(?:[ \t]*>)*)?[ \t]*<?")
_INLINE_IMAGE = re.compile(r"!\[[^\]\n]{0,200}\]\(")
_SCHEME_FAST = re.compile(r"[A-Za-z0-9+.\-]*(.?)")  # a destination's leading scheme characters and the one after
_PLAIN_IMAGE = re.compile(r"!\[[^\[\]\\`<>\n]*\]\(([^\s()<>\\`\[\]\"']+)\)")


def message_markdown(text: str, image_hosts: Collection[str] = ()) -> str:
    """``text`` with remote images turned into links (unless their host is in ``image_hosts``) and non-web links made dead."""
    hosts = frozenset(host.strip().lower() for host in image_hosts)
    return _cached(text, hosts) if len(text) <= CACHED_CHARS else _render(text, hosts)


def _render(text: str, hosts: frozenset[str]) -> str:
    return _neutralise_links(_images_as_links(text, hosts))


_cached = functools.lru_cache(maxsize=512)(_render)


def _scheme(destination: str) -> str | None:
    """The URL scheme a browser would see in a Markdown destination, lowercased; None for a relative URL."""
    decoded = html.unescape(_ESCAPED.sub(r"\1", destination))
    match = _SCHEME.match(_URL_IGNORED.sub("", decoded))
    return match.group(1).lower() if match else None


def _dead(text: str, at: int, budget: list[int]) -> bool:
    """Whether a destination starting at ``at`` (after spaces, one line break and an opening ``<``) is not a web link.

    ``budget`` counts the full decodes left for this message: a message made of thousands of "](&..." costs
    milliseconds, not minutes.
    """
    start = _DESTINATION_LEAD.match(text, at).end()
    fast = _SCHEME_FAST.match(text, start, start + DESTINATION_PEEK)
    if fast.group(1) == "" and fast.end() - start >= DESTINATION_PEEK:
        return True  # a "scheme" longer than any real one: not a web link
    if fast.group(1) not in _SCHEME_UNSURE:  # the usual case: plain characters, then ':' or something that ends a scheme
        return fast.group(1) == ":" and fast.start(1) > start and text[start : fast.start(1)].lower() not in LINK_SCHEMES
    budget[0] -= 1
    if budget[0] < 0:
        return True
    rest = text[start : start + DESTINATION_PEEK + 1]
    peek = rest[:DESTINATION_PEEK]
    scheme = _scheme(peek)
    if scheme is None and len(rest) > DESTINATION_PEEK:
        # Only padding ("&#9;", ...) so far: a browser may still find a scheme further on.
        return len(_URL_IGNORED.sub("", html.unescape(peek))) < SCHEME_MIN_SEEN
    return scheme is not None and scheme not in LINK_SCHEMES


def _neutralise_links(text: str) -> str:
    """Break every inline link, reference definition and autolink whose destination has a non-web scheme."""
    out: list[str] = []
    copied, budget = 0, [DECODE_BUDGET]
    for found in _URL_STARTS.finditer(text):
        at = found.start()
        if found.group() == "<":
            if (scheme := _SCHEME.match(text, at + 1)) and scheme.group(1).lower() not in LINK_SCHEMES:
                # "<data:...>" is an autolink, "<data\:...>" is text that reads the same. The backslash goes inside,
                # where nothing the author wrote before the "<" can pair with it (a "\" before it would).
                colon = scheme.end() - 1
                out.append(text[copied:colon] + "\\")
                copied = colon
        elif _dead(text, at + 2, budget):
            out.append(text[copied : at + 1] + "\\")  # "](" -> "]\(" and "]:" -> "]\:": no longer a link
            copied = at + 1
    out.append(text[copied:])
    return "".join(out)


def _allowed_image(text: str, i: int, hosts: set[str]) -> bool:
    """Whether ``![alt](url)`` at ``i`` is a plain image (no nesting, escapes or code) from an allowed host.

    Only a plain form is kept, so the browser cannot read its destination differently from this check.
    """
    if not hosts:
        return False
    match = _PLAIN_IMAGE.match(text, i)
    if match is None:
        return False
    url = _URL_IGNORED.sub("", html.unescape(match.group(1)))
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in IMAGE_SCHEMES and (parts.hostname or "") in hosts


def _images_as_links(text: str, hosts: set[str]) -> str:
    """Turn each ``![alt](url)`` into the link ``[icon alt](url)`` unless its host is allowed; escape any other ``![``."""
    out: list[str] = []
    copied = 0
    at = text.find("![")
    while at >= 0:
        out.append(text[copied:at])
        if _allowed_image(text, at, hosts):
            out.append("![")
        else:
            # What looks like an inline image becomes a link with an icon; "![alt][ref]" and any other "![" become
            # "!\[", which is never an image whatever stands before it ("\![" would be, after an author's "\").
            # The alt text that follows is processed in turn.
            out.append(f"[{IMAGE_LABEL} " if _INLINE_IMAGE.match(text, at) else "!\\[")
        copied = at + 2
        at = text.find("![", copied)
    out.append(text[copied:])
    return "".join(out)
