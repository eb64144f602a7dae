"""views/common.escape_markdown: a name or snippet drawn exactly as written, wherever Streamlit reads Markdown.

Read back with markdown-it-py (CommonMark, like the micromark in Streamlit's browser code): the escaped
text must come out as the same characters and nothing else. Streamlit's own additions to Markdown
($ math, :emoji: and :color[...] directives) are not CommonMark, so their marks must come out escaped.
"""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from views.common import escape_markdown
from views.search import inert

MD = MarkdownIt("commonmark")
STREAMLIT_MARKS = "$:"  # math and directives, read by Streamlit's remark plugins after CommonMark


def plain(markdown: str) -> str | None:
    """The text of a one-paragraph document, or None when it parses as anything but plain text."""
    tokens = MD.parseInline(markdown)
    children = tokens[0].children if tokens else []
    if any(child.type != "text" for child in children):
        return None
    return "".join(child.content for child in children)


def unescaped(markdown: str, mark: str) -> bool:
    at = markdown.find(mark)
    while at != -1:
        backslashes = len(markdown[:at]) - len(markdown[:at].rstrip("\\"))
        if backslashes % 2 == 0:
            return True
        at = markdown.find(mark, at + 1)
    return False


# One line with no surrounding spaces: a name, a channel, an e-mail, a search snippet.
LINE = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40).map(str.strip)


@given(LINE)
def test_escaped_text_reads_back_exactly(text):
    assert plain(escape_markdown(text)) == text


@given(LINE)
def test_streamlit_marks_are_escaped(text):
    escaped = escape_markdown(text)
    assert not any(unescaped(escaped, mark) for mark in STREAMLIT_MARKS)


def test_hostile_names_stay_text():
    for name in ("**bold**", "[x](https://evil.example)", "<b>hi</b>", ":red[alert]", "$x^2$", ":material/home:",
                 "# heading", "1. list", "- item", "> quote", "`code`", "a\\*b", "ann & bob"):
        assert plain(escape_markdown(name)) == name, name
    assert escape_markdown(":red[alert]") == "\\:red\\[alert\\]"


def test_search_snippets_use_the_same_escaper_on_one_line():
    assert inert("line one\n# two\t$3") == escape_markdown("line one # two $3")
