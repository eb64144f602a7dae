"""core/render.py: the HTML a reader's browser gets holds no script, no remote image, no non-web link.

Every check reads the renderer's real output with Python's HTML parser (the HTML tokenizer a browser
also follows), so it sees the elements, attributes and URLs a browser would get, whatever Markdown
was written to make them.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.render import ATTRIBUTES, IMAGE_ICON, TAGS, message_html

ALLOWED = ("images.example.org",)
SAFE_SCHEMES = {"http", "https", "mailto"}


class Elements(HTMLParser):
    """Every start tag of a fragment as (tag, attributes), and its text."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def browser_scheme(url: str) -> str | None:
    """The scheme a browser's URL parser finds (WHATWG: trim C0 controls and spaces, drop tabs and newlines)."""
    url = re.sub(r"[\t\n\r]", "", url.strip("".join(map(chr, range(0x21)))))
    match = re.match(r"([a-zA-Z][a-zA-Z0-9+.\-]*):", url)
    return match.group(1).lower() if match else None


def host(url: str) -> str | None:
    match = re.match(r"https?://([^/?#:@\\]+)(?:[/?#:]|$)", url.strip())
    return match.group(1).lower() if match else None


def elements(text: str, hosts=ALLOWED) -> list[tuple[str, dict]]:
    return Elements(message_html(text, hosts)).found


def assert_safe(text: str) -> None:
    for tag, attrs in elements(text):
        assert tag in TAGS, f"<{tag}> from {text!r}"
        extra = set(attrs) - ATTRIBUTES.get(tag, set()) - ({"target", "rel"} if tag == "a" else set())
        assert not extra, f"<{tag} {extra}> from {text!r}"
        if tag == "img":
            src = attrs.get("src") or ""
            assert browser_scheme(src) in ("http", "https") and host(src) in ALLOWED, f"image {src!r} from {text!r}"
        if tag == "a":
            href = attrs.get("href") or ""
            assert browser_scheme(href) in SAFE_SCHEMES | {None}, f"link {href!r} from {text!r}"
            assert attrs.get("target") == "_blank" and "noopener" in (attrs.get("rel") or "")
        assert not any(name.startswith("on") for name in attrs)


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


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<a href='javascript:x'>a</a>",
                                  "<iframe src=https://tracker.example></iframe>", "<svg onload=alert(1)>",
                                  "<style>body{display:none}</style>", "<!-- c --><b onclick=x>b</b>"])
def test_raw_html_is_text(text):
    out = message_html(text)
    assert Elements(out).found == [("p", {})] and "".join(Elements(out).text) == text


def test_remote_image_becomes_a_link_to_it():
    assert elements("look ![a cat](https://cats.example/cat.png) here") == [
        ("p", {}), ("a", {"href": "https://cats.example/cat.png", "target": "_blank",
                          "rel": "noopener noreferrer nofollow ugc"})]
    assert f"{IMAGE_ICON} a cat" in message_html("![a cat](https://cats.example/cat.png)")


def test_image_without_alt_text_is_still_a_visible_link():
    out = message_html("![](https://cats.example/cat.png)")
    assert [tag for tag, _ in Elements(out).found] == ["p", "a"] and IMAGE_ICON in out


def test_images_from_allowed_hosts_stay_images():
    text = "![chart](https://images.example.org/chart.png?w=1&h=2)"
    assert elements(text, ["Images.Example.org"])[1] == ("img", {"src": "https://images.example.org/chart.png?w=1&h=2",
                                                                 "alt": "chart"})
    # ... but only over http(s), and only that exact host
    for other in ("![c](ftp://images.example.org/c.png)", "![c](https://evil.images.example.org.evil.com/c.png)",
                  "![c](https://images.example.org@tracker.example/c.png)"):
        assert "img" not in [tag for tag, _ in elements(other)]


def test_markdown_renders_as_a_chat_reader_expects():
    out = message_html("**bold** _it_ ~~gone~~ `code`\nnext line\n\n> quoted\n\n- a\n- b\n\n|x|y|\n|-|-:|\n|1|2|")
    tags = [tag for tag, _ in Elements(out).found]
    for tag in ("strong", "em", "s", "code", "br", "blockquote", "ul", "li", "table", "th", "td"):
        assert tag in tags, tag
    assert ("td", {"style": "text-align:right"}) in Elements(out).found


def test_code_is_highlighted_by_class_names_and_unknown_languages_stay_plain():
    out = message_html("```python\nprint('x')\n```")
    assert '<span class="nb">print</span>' in out and 'class="language-python"' in out
    plain = message_html("```nosuchlanguage\n<b>x</b>\n```")
    assert "<span" not in plain and "&lt;b&gt;x&lt;/b&gt;" in plain


def test_links_keep_working():
    found = [a["href"] for tag, a in elements("[a](https://a.example) <https://b.example> [c](mailto:c@example.com) [d](/d)")
             if tag == "a"]
    assert found == ["https://a.example", "https://b.example", "mailto:c@example.com", "/d"]


def test_text_reads_as_written():
    for text in ("3 < 4 > 2 & done", "\\![r]", "see ![r] now", "a <b>tag</b> stays text", "<data:x>"):
        assert "".join(Elements(message_html(text)).text).strip() == text.replace("\\!", "!")


MARKDOWN_PIECES = [
    "![", "[", "]", "(", ")", "<", ">", "`", "``", "\\", "!", ":", '"', "'", " ", "\n", "\n\n", "    ", "> ", "- ",
    "x", "alt", "]:", "[r]", "[r]: ", "](", "&#9;", "&#106;", "&#64;", "&amp;", "\t",
    "data:", "DaTa:", "javascript:", "java&#9;script:", "vbscript:", "file:", "mailto:", "https:", "//",
    "https://images.example.org/ok.png", "http://tracker.example/p.png", "images.example.org", "@",
    "\\![", "\\<", "\\\\", "\n> ", ">", "\n>> ", "ms-msdt:",
]
RAW_HTML = ["<img src=x onerror=alert(1)>", "<script>", "</p>", "<a href=", "javascript:", "<svg/onload=x>", "&lt;", "&#0;",
            "```", "```python\n", "~~", "|a|\n|-|\n", "<http://tracker.example/p.png>"]


# How many examples each property tries comes from the Hypothesis profile (tests/conftest.py): "ci" is derandomized,
# "fuzz" runs a long random search by hand (HYPOTHESIS_PROFILE=fuzz pytest tests/test_render.py).
@settings(deadline=None)
@given(st.lists(st.sampled_from(MARKDOWN_PIECES + RAW_HTML), max_size=24).map("".join))
def test_any_mix_of_markdown_pieces_renders_only_allowed_html(text):
    assert_safe(text)


@settings(deadline=None)
@given(st.text(max_size=200))
def test_any_text_renders_only_allowed_html(text):
    assert_safe(text)
