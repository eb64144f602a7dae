"""Names of people and channels: how one is checked, and how two are compared (the rules, and nothing else)."""
from __future__ import annotations

import unicodedata
from typing import Any, Iterable

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


# Unicode TR39 confusables (confusables.txt 13.0) whose prototype is ASCII letters or digits, for the characters
# NFKD leaves as they are (NFKD already turns "𝐈" into "I", which maps here): "prototype=sources" groups. A
# subset of TR39's table, so Latin look-alikes in any script are caught (Cyrillic "А", Greek "Ι", Cherokee
# "Ꭺ", digits "0" and "1"); two names that look alike only to each other in a script other than Latin are not.
# Written out rather than a library: confusable-homoglyphs checks one string for mixed scripts and has no
# skeleton, confusables (last released 2021) enumerates spellings rather than computing one, PyICU (ICU's own
# SpoofChecker) needs ICU built from source.
CONFUSABLES = (
    "2=ƧϨᒿꙄꛯꝚ 3=ƷȜЗӠⳌꝪꞫ𑣊𖼻𝈆 4=Ꮞ𑢯 5=Ƽ𑢻 6=бᏮⳒ𑣕 7=𐓒𑣆𝈒 8=Ȣȣ৪੪𐌚𞣋 9=৭੧୨൭ⳊꝮ𑢬𑣌𑣖 A=ΑАᎪᗅꓮ𐊠𖽀 AA=Ꜳ AE=ÆӔ AO=Ꜵ AR=🜇 "
    "AU=Ꜷ AV=ꜸꜺ AY=Ꜽ B=ΒВᏴᗷꓐꞴ𐊂𐊡𐌁 C=СᏟⲤꓚ𐊢𐌂𐐕𐔜𑣩𑣲🝌 D=Ꭰᗞᗪꓓ E=ΕЕᎬ⋿ⴹꓰ𐊆𑢦𑢮 F=ϜᖴꓝꞘ𐊇𐊥𐔥𑢢𑣂𝈓 G=ԌᏀᏳꓖ H=ΗНᎻᕼⲎꓧ𐋏 J=ͿЈᎫᒍꓙꞲ "
    "K=ΚКᏦᛕⲔꓗ𐔘 L=ᏞᒪⳐꓡ𐐛𐔦𑢣𑢲𖼖𝈪 M=ΜϺМᎷᗰᛖⲘꓟ𐊰𐌑 MB=🝫 N=ΝⲚꓠ𐔓 O=0ΟОՕ߀০ଠ୦ዐⲞⵔ〇ꓳ𐊒𐊫𐐄𐓂𐔖𑓐𑢵𑣠 OE=Œ OO=ꚘꝎ P=ΡРᏢᑭⲢꓑ𐊕 Q=ⵕ "
    "QE=🜀 R=ƦᎡᏒᖇꓣ𐒴𖼵𝈖 S=ЅՏᏕᏚꓢ𐊖𐐠𖼺 T=ΤТᎢ⊤⟙Ⲧꓔ𐊗𐊱𐌕𑢼𖼊🝨 T3=Ꜩ U=Սሀᑌ∪⋃ꓴ𐓎𑢸𖽂 V=Ѵ٧۷Ꮩᐯⴸꓦꛟ𐔝𑢠𖼈𝈍 VB=🝬 W=ԜᎳᏔꓪ𑣦𑣯 "
    "X=ΧХ᙭ᚷ╳ⲬⵝꓫꞳ𐊐𐊴𐌗𐌢𐔧𑣬 Y=ΥУҮᎩᎽⲨꓬ𐊲𑢤𖽃 Z=ΖᏃꓜ𐋵𑢩𑣥 a=ɑαа⍺ aa=ꜳ ae=æӕ ao=ꜵ au=ꜷ av=ꜹꜻ ay=ꜽ b=ƄЬᏏᑲᖯ bl=Ы c=сᴄⲥꮯ𐐽 "
    "d=ԁᏧᑯꓒ dz=ʣ e=еҽ℮ꬲ f=քẝꞙꬵ g=ƍɡցᶃ h=һհᏂ i=ıɩɪιіӏᎥ⍳ꙇꭵ𑣃 j=ϳј l=1I|ƖǀΙІӀ׀וןا١۱ߊᛁ∣⏽Ⲓⵏꓲ𐊊𐌉𐌠𖼨𞣇 lO=Ю ll=ǁװ‖∥ "
    "ls=ʪ lt=₶ lz=ʫ n=ոռ o=οσоօסه٥ھہە۵०੦૦௦౦೦ഠ൦๐໐ဝ၀ჿᴏᴑⲟꬽ𐐬𐓪𑣈𑣗 oe=œ oo=∞ꚙꝏ p=ρр⍴ⲣ q=ԛգզ r=гᴦⲅꭇꭈꮁ rn=m𑜀𑣣 "
    "s=ƽѕꜱꮪ𐑈𑣁 sss=🝜 tf=ꝷ ts=ʦ u=ʋυսᴜꞟꭎꭒ𐓶𑣘 ue=ᵫ uo=ꭣ v=νѵטᴠ∨⋁ꮩ𑜆𑣀 w=ɯѡԝաᴡꮃ𑜊𑜎𑜏 x=×хᕁᕽ᙮⤫⤬⨯ y=ɣʏγуүყᶌỿꭚ𑣜 z=ᴢꮓ𑣄 "
)
PROTOTYPE = {source: prototype for group in CONFUSABLES.split() for prototype, sources in [group.split("=")]
             for source in sources}
AI_NAME = "AI"  # the name the AI's messages carry: a person named so (or alike) could speak as the AI


def skeleton(name: str) -> str:
    """How a name looks, after TR39: look-alike characters as their prototype, compared ignoring case.

    "Аda" (a Cyrillic А), "Ada" and "ADA" share one; so do "AI" and "Al", "B0b" and "Bob". Mapped before and
    after case folding, since "I" looks like "l" while "i" does not. Stored beside each user and channel name
    (``name_skeleton``, unique on Postgres: migration 012), so two look-alikes taken at once cannot both commit.
    """
    text = unicodedata.normalize("NFKD", "".join(ch for ch in name if not _ignorable(ch)))
    mapped = "".join(PROTOTYPE.get(ch, ch) for ch in text)
    folded = unicodedata.normalize("NFKD", mapped.casefold())
    return " ".join("".join(PROTOTYPE.get(ch, ch) for ch in folded).split())


def lookalike(name: str, others: Iterable[str]) -> str | None:
    """The first of ``others`` that ``name`` looks like (same skeleton), or None."""
    mine = skeleton(name)
    return next((other for other in others if skeleton(other) == mine), None)


def check_distinct(name: str, others: Iterable[str], what: str, person: bool = False) -> None:
    """Refuse a name that looks like another one of ``others`` (or, for a person, like the AI's)."""
    if person and (name_key(name) == name_key(AI_NAME) or skeleton(name) == skeleton(AI_NAME)):
        raise ValidationError(f"{name!r} looks like {AI_NAME!r}, the name the AI's messages carry: pick another name.")
    other = lookalike(name, others)
    if other is not None:
        raise ValidationError(
            f"A {what.lower()} named {other!r} already exists, and {name!r} looks like it: names that look alike "
            "are refused, so nobody can pass for someone else."
        )
