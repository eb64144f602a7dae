"""A message's Markdown as safe HTML, rendered once on the server: one parser makes the HTML, a sanitizer locks it.

The parser is markdown-it-py (CommonMark with GFM tables and strikethrough, raw HTML off, a line break
kept as a line break, as people type in a chat). What may reach a reader's browser is decided while the
HTML is made, by the parser's own reading of the text, so no second parser can read it differently:

* links: only web and mail schemes (``http``, ``https``, ``mailto``) or a relative address; anything
  else (``javascript:``, ``data:``, ``file:``, ``ms-msdt:``…) stays text (the parser's link validation);
* images: shown only from ``image_hosts`` over http(s); any other image becomes a link with an icon and
  its alt text, so no reader's browser fetches it by merely showing the message (a tracking pixel);
* code blocks with a known language are highlighted by Pygments (class names only, no inline style).

Then nh3 (the binding of the Rust ``ammonia`` sanitizer) keeps only an allow-list of elements and
attributes and checks every URL again: a bug in the first step still cannot put a script, an event
handler or a remote image on the page. Links open in a new tab with ``rel="noopener noreferrer
nofollow ugc"``. Results are cached by text, so every window and every redraw share one rendering.
"""
from __future__ import annotations

import functools
import html
import re
from typing import Collection
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

LINK_SCHEMES = frozenset({"http", "https", "mailto"})  # the web and e-mail; every other scheme is dead text
IMAGE_SCHEMES = frozenset({"http", "https"})
IMAGE_ICON = "🖼\ufe0e"  # before the alt text of an image shown as a link (text presentation: no emoji font needed)
CACHED_CHARS = 32_768  # messages up to this size are remembered once rendered (a streaming reply renders often)
HIGHLIGHT_CHARS = 20_000  # longer code blocks are shown plain: highlighting them would cost more than it gives
LINK_REL = "noopener noreferrer nofollow ugc"

TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "img", "table", "thead", "tbody", "tr", "th", "td", "span",
})
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}, "th": {"style"},
              "td": {"style"}, "span": {"class"}, "code": {"class"}}
HIGHLIGHT_CLASSES = frozenset(name for name in STANDARD_TYPES.values() if name)  # Pygments' short class names
_LANGUAGE = re.compile(r"language-[A-Za-z0-9_+#.\-]{1,40}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_ALIGN = re.compile(r"text-align:\s*(left|right|center)\s*;?")
_FORMATTER = HtmlFormatter(nowrap=True)


def message_html(text: str, image_hosts: Collection[str] = ()) -> str:
    """``text`` (Markdown) as sanitized HTML; images only from ``image_hosts``, links only to the web and mail."""
    hosts = frozenset(host.strip().lower() for host in image_hosts if host.strip())
    return _cached(text, hosts) if len(text) <= CACHED_CHARS else _render(text, hosts)


def scheme(url: str) -> str | None:
    """The scheme of a URL the parser has normalized (lowercase), None for a relative one."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else None


def web_link(url: str) -> bool:
    """Whether a link may be live: a web or mail scheme, or none (relative to this app)."""
    found = scheme(url)
    return found is None or found in LINK_SCHEMES


def allowed_image(src: str, hosts: frozenset[str]) -> bool:
    """Whether a browser may fetch ``src`` to show it: http(s) from one of ``hosts``."""
    if not hosts or scheme(src) not in IMAGE_SCHEMES:
        return False
    try:
        return (urlsplit(src).hostname or "") in hosts
    except ValueError:
        return False


def _highlight(code: str, language: str, _attrs: str) -> str:
    """A fenced block's code highlighted by class names, or "" to leave it to the parser (escaped as text)."""
    name = language.split()[0] if language else ""
    if not name or len(code) > HIGHLIGHT_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(name)
    except ClassNotFound:
        return ""
    return pygments_highlight(code, lexer, _FORMATTER)


def _image(renderer, tokens, idx, options, env) -> str:
    """An image from an allowed host as ``<img>``; any other as a link to it, icon and alt text, fetching nothing."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    if allowed_image(src, env["image_hosts"]):
        return renderer.image(tokens, idx, options, env)
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    label = html.escape(f"{IMAGE_ICON} {alt}".rstrip(), quote=False)
    return f'<a href="{html.escape(src)}">{label}</a>'


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight})
    md.enable(["table", "strikethrough"])
    md.validateLink = web_link  # called with the URL as the parser will write it (decoded, normalized)
    md.add_render_rule("image", _image)
    return md


_MD = _parser()


def _attribute(hosts: frozenset[str]):
    """nh3's per-attribute check: the second lock on URLs, classes and styles."""

    def keep(tag: str, name: str, value: str) -> str | None:
        if name == "src":
            return value if allowed_image(html.unescape(value), hosts) else None
        if name == "href":
            return value if web_link(html.unescape(value)) else None
        if name == "class":
            allowed = HIGHLIGHT_CLASSES if tag == "span" else None
            words = [w for w in value.split() if (w in allowed if allowed else _LANGUAGE.fullmatch(w))]
            return " ".join(words) or None
        if name == "style":
            match = _ALIGN.fullmatch(value.strip())
            return f"text-align:{match.group(1)}" if match else None
        return value

    return keep


def sanitize(fragment: str, hosts: frozenset[str] = frozenset()) -> str:
    """An HTML fragment with only the allow-listed elements and attributes, and only safe URLs."""
    return nh3.clean(fragment, tags=set(TAGS), attributes={k: set(v) for k, v in ATTRIBUTES.items()},
                     attribute_filter=_attribute(hosts), url_schemes=set(LINK_SCHEMES), link_rel=LINK_REL,
                     set_tag_attribute_values={"a": {"target": "_blank"}}, strip_comments=True)


def _render(text: str, hosts: frozenset[str]) -> str:
    return sanitize(_MD.render(text, {"image_hosts": hosts}), hosts).strip()


_cached = functools.lru_cache(maxsize=1024)(_render)
