"""Names of people and channels: how one is checked, and how two are compared (the rules, and nothing else)."""
from __future__ import annotations

import unicodedata
from typing import Any

from core.errors import ValidationError

NAME_MAX = 80  # characters: fits a sidebar and a chat header


def valid_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} contains invalid Unicode (a lone surrogate); please retype it.") from None


# Characters that draw nothing yet are letters or symbols to Unicode: Hangul fillers, the Braille blank.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Marks that change no glyph: the combining grapheme joiner, variation selectors, Khmer inherent vowels.
IGNORED_MARKS = frozenset("\u034f\u17b4\u17b5" + "".join(map(chr, range(0xFE00, 0xFE10))))
# Text-direction controls: "\u202enimda" is drawn as "admin". Refused in names.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _ignorable(ch: str) -> bool:
    """A character names are compared without: format and control marks (zero-width space, BOM), fillers."""
    return (
        unicodedata.category(ch)[0] == "C"
        or ch in BLANK_LETTERS
        or ch in IGNORED_MARKS
        or 0xE0100 <= ord(ch) <= 0xE01EF  # variation selectors supplement
    )


def has_visible(text: str) -> bool:
    """Whether ``text`` draws a letter, digit, punctuation mark or symbol (not only spaces, fillers or lone accents)."""
    return any(not (_ignorable(ch) or unicodedata.category(ch)[0] in "ZM") for ch in text)


def name_key(name: str) -> str:
    """How names are compared: NFKC, case folded, invisible characters dropped, runs of spaces as one.

    So "Ada" with a zero-width space, an NFD "José", "ＡＤＡ" and "𝐀𝐝𝐚" all meet their plain forms.
    """
    kept = "".join(ch for ch in unicodedata.normalize("NFKC", name) if not _ignorable(ch))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())
    return " ".join(folded.split())


def _trim(text: str) -> str:
    """Strip spaces and invisible format characters (a trailing zero-width space) from both ends."""
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or unicodedata.category(text[start]) == "Cf"):
        start += 1
    while end > start and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) == "Cf"):
        end -= 1
    return text[start:end]


def clean_name(name: Any, what: str = "Name") -> str:
    """Trim and check a user or channel name; return it as it will be stored (NFC, as typed otherwise)."""
    if not isinstance(name, str):
        raise ValidationError(f"{what} must be text.")
    valid_unicode(name, what)
    if any(ch in BIDI_CONTROLS for ch in name):
        raise ValidationError(
            f"{what} cannot contain text-direction marks (such as U+202E): they can make a name look like another."
        )
    if not name.strip():
        raise ValidationError(f"{what} cannot be empty.")
    if not has_visible(name):  # only spaces, invisible marks, fillers or lone accents
        raise ValidationError(f"{what} needs at least one visible character.")
    name = unicodedata.normalize("NFC", _trim(name))
    if len(name) > NAME_MAX:
        raise ValidationError(f"{what} is too long: {len(name)} characters; the limit is {NAME_MAX}.")
    if any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in name):
        raise ValidationError(f"{what} cannot contain control characters such as line breaks or tabs.")
    return name
