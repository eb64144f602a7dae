"""What the AI is sent, within a token budget: the persona, older messages it may need, the recent conversation.

Tokens are estimated here, without a tokenizer: text is split as GPT tokenizers pre-split it (words, runs
of digits, single symbols) and each piece is priced by its kind. Against OpenAI's o200k tokenizer
(``tests/test_context.py`` measures it) the estimate is 0.7x-1.7x of the real count: ~1.2-1.4x on prose in
English, German, Russian, Chinese or Japanese, ~1.6x on code, down to ~0.7x only on random letters. It
needs no download, costs ~0.13 s per MB, and stops early once a limit is passed (a 1 MB message costs
what the budget costs). The usage the API reports stays the source of the token counts shown.

``fit`` keeps: the system messages (persona, retrieval note), this reply's tool calls and results, the
newest message (cut, with a visible marker, when alone it is too long), then older messages newest
first while they fit; the rest are left out, and ``Fitted.cuts`` says what was cut for "Context used".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

MESSAGE_OVERHEAD = 4  # tokens a chat message costs beyond its text (role and separators), as OpenAI counts them
CUT_MARKER = "\n[… cut here: the rest of this message ({chars:,} characters) did not fit in the AI's context]"
NEWEST_FLOOR = 64  # tokens of the newest message kept even when the rest of the request leaves less
SNIPPET_TOKENS = 200  # a retrieved older message is trimmed to this
RETRIEVAL_SHARE = 0.25  # at most this part of the budget goes to retrieved older messages
TOOL_RESULT_SHARE = 0.15  # at most this part of the budget goes to one tool's answer
TOOL_RESULTS_SHARE = 0.5  # ... and this part to all of a reply's tool answers together (each round re-sends them)
# words, digit runs, symbols; runs capped at 40 characters so a long run can be cut (and priced) in parts
PIECE = re.compile(r"[A-Z]{0,39}[a-z]{1,40}|[A-Z]{1,40}|\d{1,3}|[^\W\d_]{1,40}|\s{1,40}|.", re.S)
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHUNK = 4096  # characters estimated per step when a limit may stop the count early


def _piece_tokens(piece: str) -> float:
    first, size = piece[0], len(piece)
    if first.isspace():
        return 0.3 if size == 1 else 1.0  # a single space usually joins the next word
    if first.isascii() and first.isalpha():
        caps = size - len(piece.lstrip(UPPER))
        if 1 < caps < size:  # "QWErty": not a word, tokenized in small bits
            return size / 2
        if caps == size and size > 1:  # "HTTP", "XQZP"
            return math.ceil(size / 3)
        return math.ceil(size / 6)  # a word: most are one token
    if first.isalpha():  # other scripts: 2-byte letters (Latin accents, Cyrillic, Greek) read like words
        return math.ceil(size / 5) if len(piece.encode()) <= 2 * size else size * 2 / 3  # CJK, Hangul
    if first.isdigit():
        return 1.0  # up to three digits
    return 1.0 if len(piece.encode()) < 4 else 2.0  # a symbol; an emoji costs two


def estimate_tokens(text: str, limit: int | None = None) -> int:
    """About how many tokens ``text`` costs; stops counting once past ``limit`` (then returns > limit)."""
    if limit is None:
        return math.ceil(sum(_piece_tokens(m.group()) for m in PIECE.finditer(text)))
    total = 0.0
    for start in range(0, len(text), CHUNK):  # pieces may straddle a chunk edge: a token more, never fewer
        total += sum(_piece_tokens(m.group()) for m in PIECE.finditer(text, start, start + CHUNK))
        if total > limit:
            return math.ceil(total)
    return math.ceil(total)


def prefix_within(text: str, tokens: int) -> int:
    """The length of the longest start of ``text`` estimated at most ``tokens``."""
    total = 0.0
    for match in PIECE.finditer(text):
        total += _piece_tokens(match.group())
        if total > tokens:
            return match.start()
    return len(text)


def trim(text: str, tokens: int) -> tuple[str, int]:
    """``text`` cut to about ``tokens`` with a visible marker, and how many characters were cut (0: whole)."""
    if estimate_tokens(text, tokens) <= tokens:
        return text, 0
    marker = estimate_tokens(CUT_MARKER.format(chars=len(text))) + 1  # +1: the ceil of the sum of two parts
    keep = prefix_within(text, max(tokens - marker, 1))
    return text[:keep] + CUT_MARKER.format(chars=len(text) - keep), len(text) - keep


def message_tokens(message: dict, limit: int | None = None) -> int:
    """Estimated tokens of one chat message, tool calls included."""
    total = MESSAGE_OVERHEAD + estimate_tokens(message.get("content") or "", limit)
    if message.get("tool_calls"):
        total += estimate_tokens(json.dumps(message["tool_calls"]))
    return total


def tools_tokens(tools: list[dict]) -> int:
    """Estimated tokens of the tool definitions sent with a request."""
    return estimate_tokens(json.dumps(tools)) if tools else 0


@dataclass
class Fitted:
    """A request's messages within the budget, and what was left out or cut to get there."""

    messages: list[dict]
    tokens: int  # the estimate of what is sent
    budget: int
    dropped: int = 0  # older messages left out
    cuts: list[str] = field(default_factory=list)  # readable notes, one per cut or drop

    def note(self) -> str | None:
        """One line for the reply's steps, or None when everything fit."""
        if not self.cuts:
            return None
        return f"To fit the {self.budget:,}-token budget: " + "; ".join(self.cuts) + "."


def fit(system: list[dict], history: list[dict], tail: list[dict], budget: int, fixed: int = 0) -> Fitted:
    """The messages to send: ``system`` and ``tail`` whole, the newest of ``history`` always, older ones while they fit.

    ``history`` runs oldest to newest; ``tail`` is this reply's tool calls and results (trimmed by the caller);
    ``fixed`` is what the tool definitions cost.
    """
    used = fixed + sum(message_tokens(m) for m in system) + sum(message_tokens(m) for m in tail)
    kept: list[dict] = []
    cuts: list[str] = []
    dropped = 0
    if history:
        *older, newest = history
        room = max(budget - used, NEWEST_FLOOR + MESSAGE_OVERHEAD)
        cost = message_tokens(newest, room)
        if cost > room:
            original = newest.get("content") or ""
            content, cut = trim(original, room - MESSAGE_OVERHEAD)
            newest = {**newest, "content": content}
            cost = message_tokens(newest)
            cuts.append(f"cut the newest message to its first {len(original) - cut:,} of {len(original):,} characters")
        used += cost
        for message in reversed(older):
            cost = message_tokens(message, budget - used)
            if used + cost > budget:
                dropped = len(older) - len(kept)
                break
            kept.append(message)
            used += cost
        kept.reverse()
        kept.append(newest)
        if dropped:
            cuts.insert(0, f"left out the {dropped} oldest of the recent messages" if dropped > 1
                        else "left out the oldest of the recent messages")
    return Fitted([*system, *kept, *tail], used, budget, dropped, cuts)
