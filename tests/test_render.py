"""core/render.py: remote images become links, non-web links die, everything else is left as written.

The rendered result is read back with markdown-it-py, a CommonMark parser like the micromark that
Streamlit's browser code uses, told to keep every URL (its own link filter off), so each check sees the
links and images a browser would get.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from core.render import IMAGE_LABEL, message_markdown

ALLOWED = ("images.example.org",)
SAFE_SCHEMES = {"http", "https", "mailto"}


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark")
    md.validateLink = lambda url: True  # see every URL, as Streamlit's renderer does (it only drops javascript:)
    md.normalizeLink = lambda url: url
    md.normalizeLinkText = lambda text: text
    return md


MD = _parser()


def browser_scheme(url: str) -> str | None:
    """The scheme a browser's URL parser finds (WHATWG: trim C0 controls and spaces, drop tabs and newlines)."""
    url = re.sub(r"[\t\n\r]", "", url.strip("".join(map(chr, range(0x21)))))
    match = re.match(r"([a-zA-Z][a-zA-Z0-9+.\-]*):", url)
    return match.group(1).lower() if match else None


def rendered(text: str) -> tuple[list[str], list[str]]:
    """(image sources, link targets) of ``text`` as a CommonMark renderer sees them."""
    images, links = [], []
    stack = list(reversed(MD.parse(text)))
    while stack:
        token = stack.pop()
        if token.type == "image":
            images.append(token.attrs["src"])
        if token.type == "link_open":
            links.append(token.attrs["href"])
        stack.extend(reversed(token.children or ()))
    return images, links


def host(url: str) -> str | None:
    match = re.match(r"https?://([^/?#:@]+)(?:[/?#:]|$)", url.strip())
    return match.group(1).lower() if match else None


def assert_safe(text: str) -> None:
    images, links = rendered(message_markdown(text, ALLOWED))
    for src in images:
        assert browser_scheme(src) in ("http", "https") and host(src) in ALLOWED, f"image {src!r} from {text!r}"
    for href in links:
        assert browser_scheme(href) in SAFE_SCHEMES | {None}, f"link {href!r} from {text!r}"


@pytest.mark.parametrize(
    "text",
    [
        "![pixel](https://tracker.example/p.png)",
        "![](http://tracker.example/p.png)",
        '![x](<https://tracker.example/a b.png> "title")',
        "![x][ref]\n\n[ref]: https://tracker.example/p.png",
        "![ref]\n\n[ref]: https://tracker.example/p.png",
        "[![badge](https://tracker.example/b.svg)](https://example.com)",
        "![a ![b](https://tracker.example/b.png)](https://tracker.example/a.png)",
        "![x](//tracker.example/p.png)",
        "![x](https://images.example.org&#64;tracker.example/p.png)",
        "![x](https://images.example.org\\@tracker.example/p.png)",
        "![x](data:image/svg+xml,<svg/onload=alert(1)>)",
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x](java&#9;script:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](<java\tscript:alert(1)>)",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](  \n  data:text/html,hi)",
        "[x](<data:text/html,hi there>)",
        "[x](vbscript:msgbox)",
        "[x](file:///etc/passwd)",
        "[x][r]\n\n[r]: data:text/html,hi",
        "[x][r]\n\n[r]:\n  <data:text/html,hi>",
        "[r]\n\n> [r]: data:text/html,hi",
        "<data:text/html,hi>",
        "<DATA:text/html,hi>",
        "<javascript:alert(1)>",
        "[x](" + " " * 500 + "data:text/html,hi)",
        "[x](<" + "&#9;" * 300 + "data:text/html,hi>)",
        "[x](\\data:text/html,hi)",
        "`code` [x](data:x) `more`",
        # An author's backslash before what the rewrite escapes must not pair with the rewrite's own backslash.
        "\\![r]\n\n[r]: https://tracker.example/p.png",
        "\\![a\nb](https://tracker.example/p.png)",
        "\\![a]b](https://tracker.example/p.png)",
        "\\\\\\![r]\n\n[r]: https://tracker.example/p.png",
        "\\<data:>",
        "\\<data:text/html,hi>",
        "\\\\\\<javascript:alert(1)>",
        # A destination on the next line of a block quote, after its ">" markers.
        "> [a](\n> ms-msdt:/id?x)",
        "> [r]:\n> data:text/html,hi\n\n> [x][r]",
        "> > [a](\n> > data:text/html,hi)",
        "[r]\n\n> [r]:\n>   <data:text/html,hi>",
    ],
)
def test_no_image_and_no_dead_scheme_survives(text):
    assert_safe(text)


def test_remote_image_becomes_a_link_to_it():
    out = message_markdown("look ![a cat](https://cats.example/cat.png) here")
    assert out == f"look [{IMAGE_LABEL} a cat](https://cats.example/cat.png) here"
    assert rendered(out) == ([], ["https://cats.example/cat.png"])


def test_image_without_alt_text_is_still_a_visible_link():
    images, links = rendered(message_markdown("![](https://cats.example/cat.png)"))
    assert (images, links) == ([], ["https://cats.example/cat.png"])
    assert IMAGE_LABEL in message_markdown("![](https://cats.example/cat.png)")


def test_images_from_allowed_hosts_stay_images():
    text = "![chart](https://images.example.org/chart.png?w=1&h=2)"
    assert message_markdown(text, ["Images.Example.org"]) == text
    assert rendered(message_markdown(text, ALLOWED))[0] == ["https://images.example.org/chart.png?w=1&h=2"]
    # ... but only over http(s), and only that exact host
    for other in ("![c](ftp://images.example.org/c.png)", "![c](https://evil.images.example.org.evil.com/c.png)"):
        assert rendered(message_markdown(other, ALLOWED))[0] == []


@pytest.mark.parametrize(
    "text",
    [
        "plain words, **bold**, _it_, `code`, > quotes",
        "[docs](https://docs.streamlit.io) and <https://example.com> and [mail](mailto:ann@example.com)",
        "[relative](page/2) [anchor](#top) [ref][r]\n\n[r]: https://example.com/ref",
        "a <b>tag</b> stays text; 3 < 4 > 2",
    ],
)
def test_everything_else_is_left_exactly_as_written(text):
    assert message_markdown(text) == text


def test_escaped_markup_reads_as_written():
    assert MD.renderInline(message_markdown("<data:x>")) == "&lt;data:x&gt;"
    assert MD.renderInline(message_markdown("\\![r]")) == "![r]"  # the author's backslash escapes the "!", as written
    assert MD.renderInline(message_markdown("see ![r] now")) == "see ![r] now"


def test_links_keep_working():
    _, links = rendered(message_markdown("[a](https://a.example) <https://b.example> [c](mailto:c@example.com) [d](/d)"))
    assert links == ["https://a.example", "https://b.example", "mailto:c@example.com", "/d"]


MARKDOWN_PIECES = [
    "![", "[", "]", "(", ")", "<", ">", "`", "``", "\\", "!", ":", '"', "'", " ", "\n", "\n\n", "    ", "> ", "- ",
    "x", "alt", "]:", "[r]", "[r]: ", "](", "&#9;", "&#106;", "&#64;", "&amp;", "\t",
    "data:", "DaTa:", "javascript:", "java&#9;script:", "vbscript:", "file:", "mailto:", "https:", "//",
    "https://images.example.org/ok.png", "http://tracker.example/p.png", "images.example.org", "@",
    "\\![", "\\<", "\\\\", "\n> ", ">", "\n>> ", "ms-msdt:",
]


# How many examples each property tries comes from the Hypothesis profile (tests/conftest.py): "ci" is derandomized,
# "fuzz" runs a long random search by hand (HYPOTHESIS_PROFILE=fuzz pytest tests/test_render.py).
@settings(deadline=None)
@given(st.lists(st.sampled_from(MARKDOWN_PIECES), max_size=24).map("".join))
def test_any_mix_of_markdown_pieces_renders_no_remote_image_and_no_dead_link(text):
    assert_safe(text)


@settings(deadline=None)
@given(st.text(max_size=200))
def test_text_without_link_syntax_is_unchanged(text):
    if not any(mark in text for mark in ("![", "](", "]:", "<")):
        assert message_markdown(text) == text
