"""Message search for people and for the AI: keyword and semantic, fused into one ranking.

Keyword matching is literal: a message matches when it contains every word of the query (words are
split on spaces) as case-insensitive text, so quotes, ``%``, ``_``, regex and SQL characters mean
themselves. A message holding the whole query as one phrase ranks above one with the words scattered.
Semantic matching compares the query's embedding with the messages' (``core.embeddings``); it is used
only once every message has a vector from the configured provider, otherwise search is keyword-only.
The two rankings are fused by reciprocal rank fusion, with exact phrases kept on top.
Over 300 lines on purpose: people's search and the AI's retrieval (related_messages) are one ranking, and
splitting them would put its internals (keyword scan, semantic scan, fusion) behind a second module's imports.
"""
from __future__ import annotations

import math
import numbers
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from core import embeddings
from core.errors import NotFound, ValidationError
from core.ids import check_id
from core.limits import Limits, check_search
from core.membership import APP, Hidden, check_read, hidden_from
from core.messages import MESSAGE_COLUMNS, MESSAGE_FROM, Message
from core.store import Database

MIN_QUERY_CHARS = 2  # one letter matches nearly every message: too vague to rank
MAX_QUERY_CHARS = 200  # a search box, not a document: longer text belongs in related_messages
MAX_TERMS = 10  # each word is one more pass over the text; ten covers any real query
MAX_LIMIT = 100  # hits per page
MAX_OFFSET = 1000  # how deep paging goes: past 50 pages a better query is the answer
RECENT_WINDOW = 20_000  # ids a newest-first keyword search reads before it falls back to the whole table
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): damps the weight of top ranks
PHRASE_BONUS = 1.0  # larger than any fused rank score (at most 2/61), so exact phrases always lead
RELATED_TERMS = 12  # the most telling words of a text that related_messages looks for
RELATED_MIN_WORD = 3  # shorter words ("is", "ok") say little about what a message is about
SNIPPET_CHARS = 240  # characters of context a result shows around its first match
STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its may new now old see "
    "two way who did get let say she too use that with have this will your from they know want been good much "
    "some time very when come here just like long make many over such take than them well were what about "
    "there their would which could should these those into only also then after before again".split()
)
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Hit:
    """One search result. ``spans`` are (start, end) character offsets of matched words in ``content``."""

    message_id: int
    channel_id: int
    channel_name: str
    author_id: int | None
    author_name: str | None  # None for the AI
    created_at: datetime
    content: str
    score: float
    spans: tuple[tuple[int, int], ...] = ()
    matched_by: str = "keyword"  # keyword | semantic | both

    @property
    def is_ai(self) -> bool:
        return self.author_id is None

    def snippet(self, width: int = SNIPPET_CHARS) -> tuple[str, tuple[tuple[int, int], ...]]:
        """A window of about ``width`` characters around the first match, with spans shifted into it."""
        text = self.content
        if len(text) <= width:
            return text, self.spans
        first = self.spans[0][0] if self.spans else 0
        start = max(0, min(first - width // 4, len(text) - width))
        end = start + width
        spans = tuple((max(a, start) - start, min(b, end) - start) for a, b in self.spans if a < end and b > start)
        prefix, suffix = ("…" if start else ""), ("…" if end < len(text) else "")
        shift = len(prefix)
        return prefix + text[start:end] + suffix, tuple((a + shift, b + shift) for a, b in spans)


@dataclass(frozen=True)
class Query:
    """A checked search query: the phrase as typed (spaces collapsed) and its distinct words."""

    phrase: str
    terms: tuple[str, ...]


def parse_query(query: Any) -> Query:
    """Check a query typed by a person; a ValidationError says what is wrong with it."""
    if not isinstance(query, str):
        raise ValidationError("The search must be text.")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("The search contains invalid Unicode (a lone surrogate); please retype it.") from None
    phrase = " ".join(query.split())
    if not phrase:
        raise ValidationError("Type a word or phrase to search for.")
    visible = sum(1 for ch in phrase if unicodedata.category(ch)[0] not in "CZ")
    if visible < MIN_QUERY_CHARS:
        raise ValidationError(f"The search is too short: type at least {MIN_QUERY_CHARS} characters.")
    if len(phrase) > MAX_QUERY_CHARS:
        raise ValidationError(f"The search is too long: {len(phrase)} characters; the limit is {MAX_QUERY_CHARS}.")
    terms: list[str] = []
    for word in phrase.split(" "):
        if word.casefold() not in (t.casefold() for t in terms):
            terms.append(word)
    if len(terms) > MAX_TERMS:
        raise ValidationError(f"The search has {len(terms)} words; use at most {MAX_TERMS}.")
    return Query(phrase, tuple(terms))


def _check_page(limit: Any, offset: Any) -> tuple[int, int]:
    for name, value, low, high in (("limit", limit, 1, MAX_LIMIT), ("offset", offset, 0, MAX_OFFSET)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
            raise ValidationError(f"{name} must be a whole number from {low} to {high}, not {value!r}.")
    return int(limit), int(offset)


def _channel(db: Database, channel_id: Any) -> int | None:
    if channel_id is None:
        return None
    channel_id = check_id(channel_id, "Channel")
    if db.one("SELECT 1 FROM channels WHERE id = ?", [channel_id]) is None:
        raise NotFound(f"Channel {channel_id} not found.")
    return channel_id


# keyword ---------------------------------------------------------------------
def _newest_first(db: Database, select: str, params: list[Any], depth: int) -> list[tuple]:
    """The ``depth`` newest rows of ``select`` (a query over ``messages m``), newest first.

    A common word fills a page among the newest messages: look there first (a range of the primary key),
    and read the whole table only when that window holds fewer than ``depth`` matches. Same rows either way.
    """
    (top,) = db.one("SELECT max(id) FROM messages")
    if top is not None and top > RECENT_WINDOW:
        rows = db.rows(f"{select} AND m.id > ? ORDER BY m.id DESC LIMIT ?", [*params, top - RECENT_WINDOW, depth])
        if len(rows) >= depth:
            return rows
    return db.rows(f"{select} ORDER BY m.id DESC LIMIT ?", [*params, depth])


def _keyword_ids(
    db: Database,
    terms: Sequence[str],
    phrase: str,
    channel_id: int | None,
    depth: int,
    *,
    every_term: bool = True,
    exclude: Sequence[int] = (),
    before_id: int | None = None,
    hidden: Hidden | None = None,
) -> list[tuple[int, int]]:
    """(message id, phrase matched 0/1) of the best keyword matches, best first, none from a ``hidden`` channel.

    Ranked by: the whole phrase present, then (for any-term matching) the summed rarity of the words matched, then newest.
    """
    contains = db.dialect.contains("m.content")
    where = ["m.status = 'complete'"]
    params: list[Any] = []
    if channel_id is not None:
        where.append("m.channel_id = ?")
        params.append(channel_id)
    if hidden is not None:  # who may read what, inside the query: a page is never short of readable hits
        where.append("m.channel_id <= ?")
        params.append(hidden.upto)
        if hidden.ids:
            where.append(f"m.channel_id NOT IN ({', '.join('?' for _ in hidden.ids)})")
            params.extend(hidden.ids)
    if before_id is not None:
        where.append("m.id < ?")
        params.append(before_id)
    if exclude:
        where.append(f"m.id NOT IN ({', '.join('?' for _ in exclude)})")
        params.extend(exclude)
    if every_term:
        # Newest first, so a common word stops early (DuckDB's top-N skips row groups, Postgres walks its key
        # backwards). One pass holds every match when there are fewer than ``depth``; otherwise a second,
        # phrase-only pass finds the older exact phrases that rank above the newest scattered matches.
        flag = f"(CASE WHEN {contains} THEN 1 ELSE 0 END)"
        rows = _newest_first(
            db,
            f"SELECT m.id, {flag} FROM messages m WHERE {' AND '.join([*where, *(contains for _ in terms)])}",
            [phrase, *params, *terms],
            depth,
        )
        if len(rows) < depth or len(terms) == 1:
            return sorted(((int(mid), int(hit)) for mid, hit in rows), key=lambda row: (-row[1], -row[0]))
        exact = _newest_first(
            db, f"SELECT m.id FROM messages m WHERE {' AND '.join([*where, contains])}", [*params, phrase], depth
        )
        seen = {row[0] for row in exact}
        ranked = [(int(row[0]), 1) for row in exact]
        ranked += [(int(mid), 0) for mid, hit in rows if not hit and mid not in seen]
        return ranked[:depth]
    # Any-term matching ranks by how telling the matched words are: a word few of these messages hold
    # (inverse document frequency, counted in one pass) outweighs one that most filler shares.
    counts = db.one(
        f"SELECT count(*), {', '.join(f'sum(CASE WHEN {contains} THEN 1 ELSE 0 END)' for _ in terms)} "
        f"FROM messages m WHERE {' AND '.join(where)}",
        [*terms, *params],
    )
    total = int(counts[0] or 0)
    weights = [math.log((total + 1) / ((count or 0) + 0.5)) for count in counts[1:]]
    matched = " + ".join(f"(CASE WHEN {contains} THEN CAST(? AS {db.dialect.double}) ELSE 0 END)" for _ in terms)
    sql = (
        f"SELECT m.id, (CASE WHEN {contains} THEN 1 ELSE 0 END) AS phrase, ({matched}) AS words FROM messages m "
        f"WHERE {' AND '.join(where)} AND ({' OR '.join(contains for _ in terms)}) "
        "ORDER BY phrase DESC, words DESC, m.id DESC LIMIT ?"
    )
    rows = db.rows(sql, [phrase, *[v for pair in zip(terms, weights) for v in pair], *params, *terms, depth])
    return [(int(row[0]), int(row[1])) for row in rows]


# building hits ---------------------------------------------------------------
def spans_of(content: str, terms: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """Where the words occur in ``content`` (case-insensitive, literal), merged and in order."""
    found = []
    for term in terms:
        if term:
            found.extend(m.span() for m in re.finditer(re.escape(term), content, re.IGNORECASE))
    merged: list[list[int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((a, b) for a, b in merged)


def _hits(db: Database, scored: list[tuple[int, float, str]], terms: Sequence[str]) -> list[Hit]:
    """Read the messages of ranked (id, score, matched_by) triples and build hits in that order."""
    if not scored:
        return []
    ids = [message_id for message_id, _, _ in scored]
    rows = db.rows(
        "SELECT m.id, m.channel_id, c.name, m.author_id, u.name, m.created_at, m.content FROM messages m "
        "JOIN channels c ON c.id = m.channel_id LEFT JOIN users u ON u.id = m.author_id "
        "WHERE m.id = ANY(?) AND m.deleted_at IS NULL",  # one list parameter: DuckDB probes its key index (an IN list of 20 scans 10x longer)
        [ids],
    )
    by_id = {row[0]: row for row in rows}
    hits = []
    for message_id, score, matched_by in scored:
        row = by_id.get(message_id)
        if row is None:
            continue
        _, channel_id, channel_name, author_id, author_name, created_at, content = row
        if author_id is not None and author_name is None:
            author_name = "Unknown user"
        hits.append(
            Hit(message_id, channel_id, channel_name, author_id, author_name, created_at, content, score,
                spans_of(content, terms), matched_by)
        )
    return hits


def _fuse(keyword: list[tuple[int, int]], semantic: list[tuple[int, float]]) -> list[tuple[int, float, str]]:
    """Reciprocal rank fusion of the two rankings; a keyword hit holding the whole phrase gets PHRASE_BONUS."""
    scores: dict[int, float] = {}
    kinds: dict[int, set[str]] = {}
    for rank, (message_id, phrase) in enumerate(keyword, start=1):
        scores[message_id] = scores.get(message_id, 0.0) + 1.0 / (RRF_K + rank) + (PHRASE_BONUS if phrase else 0.0)
        kinds.setdefault(message_id, set()).add("keyword")
    for rank, (message_id, _) in enumerate(semantic, start=1):
        scores[message_id] = scores.get(message_id, 0.0) + 1.0 / (RRF_K + rank)
        kinds.setdefault(message_id, set()).add("semantic")
    ranked = sorted(scores.items(), key=lambda item: (-item[1], -item[0]))
    return [(mid, score, "both" if len(kinds[mid]) == 2 else next(iter(kinds[mid]))) for mid, score in ranked]


def _semantic_ids(
    db: Database, text: str, channel_id: int | None, depth: int, exclude: Sequence[int] = (), before_id: int | None = None,
    user_id: int | None = None,
    hidden: Hidden | None = None,
) -> list[tuple[int, float]]:
    return embeddings.nearest(db, text, channel_id=channel_id, limit=depth, exclude=exclude, before_id=before_id,
                              user_id=user_id, hidden=hidden)  # the index leaves them out before it ranks


# the verbs -------------------------------------------------------------------
def search_messages(
    db: Database, query: Any, channel_id: Any = None, limit: int = 20, offset: int = 0, *, by: Any = None,
    limits: Limits | None = None, reader: Any = APP, hidden: Hidden | None = None,
) -> list[Hit]:
    """Finished messages matching ``query`` (in one channel, or all), best first, ``limit`` from ``offset``.

    Only channels the ``reader`` may read (core.membership; ``APP``: all) are searched, or, for the AI, all but
    the ``hidden`` ones (core.membership.hidden_from_ai): the filter sits inside the ranking queries, so a
    page holds ``limit`` readable hits whenever that many exist. A channel the reader cannot read: NotAMember.

    ``by`` is the person who searches; with ``limits`` too, a search over their SEARCHES_PER_MINUTE raises
    RateLimited. A query embedded by a paid API is in the usage ledger, charged to ``by`` (core.embeddings).
    """
    parsed = parse_query(query)
    limit, offset = _check_page(limit, offset)
    channel = _channel(db, channel_id)
    if channel is not None:
        check_read(db, reader, channel)
    if hidden is None and reader is not APP:
        hidden = hidden_from(db, reader)
    person = check_id(by, "User") if by is not None else None
    if person is not None and limits is not None:
        check_search(db, limits, person, (parsed.phrase.casefold(), channel, limit, offset), db.clock(),
                     paid=embeddings.paid_queries(db))
    depth = offset + limit
    keyword = _keyword_ids(db, parsed.terms, parsed.phrase, channel, depth, hidden=hidden)
    semantic = _semantic_ids(db, parsed.phrase, channel, depth, user_id=person, hidden=hidden)
    fused = _fuse(keyword, semantic)[offset:depth]
    return _hits(db, fused, parsed.terms)


def telling_words(text: str, count: int = RELATED_TERMS) -> list[str]:
    """The words of ``text`` most likely to find related messages: long, not common, longest first."""
    seen: dict[str, str] = {}
    for word in WORD.findall(text):
        key = word.casefold()
        if len(word) >= RELATED_MIN_WORD and key not in STOPWORDS and not word.isdigit() and key not in seen:
            seen[key] = word
    return sorted(seen.values(), key=len, reverse=True)[:count]


def related_messages(
    db: Database,
    channel_id: Any,
    text: Any,
    exclude_ids: Iterable[int] = (),
    limit: int = 5,
    before_id: int | None = None,
) -> list[Hit]:
    """The channel's messages most related to ``text`` (for retrieval), best first; none of ``exclude_ids``."""
    channel = check_id(channel_id, "Channel")
    _channel(db, channel)
    if not isinstance(text, str):
        raise ValidationError("The text to relate must be text.")
    limit, _ = _check_page(limit, 0)
    exclude = sorted({check_id(i, "Message") for i in exclude_ids})
    before = check_id(before_id, "Message") if before_id is not None else None
    words = telling_words(text)
    phrase = " ".join(text.split())[:MAX_QUERY_CHARS]
    keyword = (
        _keyword_ids(db, words, phrase, channel, limit, every_term=False, exclude=exclude, before_id=before)
        if words
        else []
    )
    semantic = _semantic_ids(db, text, channel, limit, exclude=exclude, before_id=before) if text.strip() else []
    return _hits(db, _fuse(keyword, semantic)[:limit], words)


AROUND = 5  # messages shown on each side of a result opened in its channel


def messages_around(db: Database, message_id: Any, radius: int = AROUND, *, reader: Any = APP) -> list:
    """A message with up to ``radius`` messages of its channel before and after it, oldest first (if ``reader`` may)."""
    message_id = check_id(message_id, "Message")
    row = db.one("SELECT channel_id FROM messages WHERE id = ?", [message_id])
    if row is None:
        raise NotFound(f"Message {message_id} not found.")
    check_read(db, reader, row[0])
    base = f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.channel_id = ?"
    before = db.rows(f"{base} AND m.id <= ? ORDER BY m.id DESC LIMIT ?", [row[0], message_id, radius + 1])
    after = db.rows(f"{base} AND m.id > ? ORDER BY m.id LIMIT ?", [row[0], message_id, radius])
    return [Message(*r) for r in [*reversed(before), *after]]
