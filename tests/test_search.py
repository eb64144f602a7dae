"""Message search on a real database: literal matching, channel scoping, ranking, paging, readable errors."""
from __future__ import annotations

import pytest

from core import chat, search
from core.errors import NotFound, ValidationError


@pytest.fixture
def dev(db):
    return chat.create_channel(db, "dev", reply_policy="off")


def say(db, channel_id, author_id, *texts) -> list[int]:
    return [chat.send_message(db, channel_id, author_id, text) for text in texts]


def contents(hits) -> list[str]:
    return [hit.content for hit in hits]


TRICKY = [
    "100% sure",
    "1000 sure",
    "a_b matters",
    "axb matters",
    "it's O'Brien's turn",
    'she said "ship it" loudly',
    "x.*y is a regex",
    "xaay is not",
    "'; DROP TABLE messages; --",
    "path C:\\temp\\new",
    "(a+b)*c [0-9]{2} ^start$ | pipe",
    "Grüße aus Köln, naïve café",
    "猫が好きです",
    "emoji 🚀 launch",
]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("100%", ["100% sure"]),
        ("a_b", ["a_b matters"]),
        ("O'Brien's", ["it's O'Brien's turn"]),
        ('"ship it"', ['she said "ship it" loudly']),
        ("x.*y", ["x.*y is a regex"]),
        ("DROP TABLE messages; --", ["'; DROP TABLE messages; --"]),
        ("C:\\temp", ["path C:\\temp\\new"]),
        ("(a+b)*c", ["(a+b)*c [0-9]{2} ^start$ | pipe"]),
        ("[0-9]{2} ^start$", ["(a+b)*c [0-9]{2} ^start$ | pipe"]),
        ("GRÜSSE", []),  # case folds letter by letter: ß is not ss
        ("grüße KÖLN", ["Grüße aus Köln, naïve café"]),
        ("NAÏVE", ["Grüße aus Köln, naïve café"]),
        ("好き", ["猫が好きです"]),
        ("🚀 launch", ["emoji 🚀 launch"]),
    ],
)
def test_queries_match_literally(db, ann, general, query, expected):
    say(db, general, ann, *TRICKY)
    assert contents(search.search_messages(db, query)) == expected
    assert chat.list_messages(db, general, limit=50)  # the table is intact after SQL-looking queries


def test_highlight_spans_point_at_the_matched_words(db, ann, general):
    say(db, general, ann, "Deploy the API, then deploy the UI")
    (hit,) = search.search_messages(db, "DEPLOY ui")
    assert [hit.content[a:b] for a, b in hit.spans] == ["Deploy", "deploy", "UI"]
    assert (hit.author_name, hit.channel_name, hit.is_ai) == ("Ann", "general", False)


def test_snippet_of_a_long_message_keeps_the_match_in_view(db, ann, general):
    text = "x" * 5000 + " needle " + "y" * 5000
    say(db, general, ann, text)
    (hit,) = search.search_messages(db, "needle")
    snippet, spans = hit.snippet(100)
    assert len(snippet) <= 102 and snippet.startswith("…") and snippet.endswith("…")
    assert [snippet[a:b] for a, b in spans] == ["needle"]


def test_one_channel_never_returns_another(db, ann, general, dev):
    say(db, general, ann, "deploy plan for general")
    say(db, dev, ann, "deploy plan for dev", "another deploy plan in dev")
    assert contents(search.search_messages(db, "deploy plan", channel_id=general)) == ["deploy plan for general"]
    assert {h.channel_name for h in search.search_messages(db, "deploy plan", channel_id=dev)} == {"dev"}
    assert len(search.search_messages(db, "deploy plan")) == 3


def test_exact_phrase_ranks_above_scattered_words(db, ann, general):
    scattered = say(db, general, ann, "friday: we deploy, hopefully on time", "on friday the deploy broke")
    exact = say(db, general, ann, "we deploy on friday")[0]
    newer = say(db, general, ann, "deploy? on friday? maybe")
    hits = search.search_messages(db, "deploy on friday")
    assert hits[0].message_id == exact
    assert {h.message_id for h in hits[1:]} == set(scattered + newer)
    assert hits[0].score > hits[1].score


def test_every_word_must_appear(db, ann, general):
    say(db, general, ann, "deploy tonight", "friday party")
    assert search.search_messages(db, "deploy friday") == []


def test_paging_walks_the_ranking_without_repeats(db, ann, general):
    ids = say(db, general, ann, *[f"standup note {i}" for i in range(25)])
    pages = [search.search_messages(db, "standup", limit=10, offset=offset) for offset in (0, 10, 20)]
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [h.message_id for page in pages for h in page]
    assert seen == sorted(ids, reverse=True)  # one tier: newest first


def test_unfinished_ai_replies_are_not_found(db, ann):
    channel = chat.create_channel(db, "asks")  # the AI answers here: a pending reply with no text
    say(db, channel, ann, "what about the deploy")
    ai = chat.write_agent_response(db, channel, "The deploy is on Friday.")
    hits = search.search_messages(db, "deploy")
    assert [h.message_id for h in hits][0] == ai
    assert hits[0].is_ai and hits[0].author_name is None
    assert all(h.content for h in hits)


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "Type a word or phrase"),
        ("   \n ", "Type a word or phrase"),
        ("a", "too short"),
        (" ? ", "too short"),
        ("x" * 201, "too long"),
        (" ".join(f"w{i}" for i in range(11)), "at most 10"),
        (None, "must be text"),
        ("\ud800ab", "invalid Unicode"),
    ],
)
def test_bad_queries_get_a_clear_sentence(db, query, message):
    with pytest.raises(ValidationError) as caught:
        search.search_messages(db, query)
    assert message in str(caught.value)
    assert str(caught.value).endswith(".")


def test_bad_paging_and_channels_are_refused(db, general):
    with pytest.raises(ValidationError):
        search.search_messages(db, "hello", limit=0)
    with pytest.raises(ValidationError):
        search.search_messages(db, "hello", offset=-1)
    with pytest.raises(NotFound):
        search.search_messages(db, "hello", channel_id=general + 99)


def test_related_messages_ranks_by_shared_words_and_excludes(db, ann, general, dev):
    old = say(db, general, ann, "The deploy pipeline uses blue green switching", "Lunch is at noon",
              "Bob said the pipeline deploy failed on Monday")
    say(db, dev, ann, "deploy pipeline deploy pipeline in dev")
    recent = say(db, general, ann, "what did Bob say about the deploy pipeline?")
    hits = search.related_messages(db, general, "what did Bob say about the deploy pipeline?", exclude_ids=recent)
    assert [h.message_id for h in hits] == [old[2], old[0]]  # most words shared first; no other channel
    hits = search.related_messages(db, general, "deploy", before_id=old[2], limit=5)
    assert [h.message_id for h in hits] == [old[0]]
    assert search.related_messages(db, general, "?!") == []


def test_related_messages_weigh_a_rare_shared_word_above_a_common_one(db, ann, general):
    """Each holds one word of the question: the old message with the rare word ("credential") ranks above
    the newer ones sharing a word most of the channel uses ("staging")."""
    rare = say(db, general, ann, "Rotate the credential every Tuesday night")[0]
    common = say(db, general, ann, *[f"staging build {i} is green" for i in range(12)])
    hits = search.related_messages(db, general, "How often does the staging credential change?", limit=3)
    assert [h.message_id for h in hits] == [rare, common[-1], common[-2]]


def test_an_old_exact_phrase_beats_many_newer_scattered_matches(db, ann, general):
    exact = say(db, general, ann, "the deploy on friday went well")[0]
    scattered = say(db, general, ann, *[f"friday {i}: deploy, then on call" for i in range(30)])
    first = search.search_messages(db, "deploy on friday", limit=10)
    assert first[0].message_id == exact
    assert [h.message_id for h in first[1:]] == scattered[::-1][:9]
    rest = search.search_messages(db, "deploy on friday", limit=10, offset=10)
    assert [h.message_id for h in rest] == scattered[::-1][9:19]


def test_newest_window_gives_the_same_results_as_reading_everything(db, ann, general, dev, monkeypatch):
    """A common word's page comes from the newest ids first; a rare one falls back to the whole table."""
    say(db, general, ann, "rare zebra sighting", "the deploy on friday", *[f"deploy note {i}" for i in range(20)])
    say(db, dev, ann, *[f"dev deploy {i}" for i in range(10)], "deploy on friday in dev")

    def results():
        return {(query, channel): [h.message_id for h in search.search_messages(db, query, channel, limit=5)]
                for query in ("deploy", "zebra", "deploy on friday", "deploy friday") for channel in (None, general)}

    monkeypatch.setattr(search, "RECENT_WINDOW", 10**9)  # never a window: the whole table
    everything = results()
    monkeypatch.setattr(search, "RECENT_WINDOW", 6)  # the newest ids only, then the fallback
    assert results() == everything
    assert everything[("zebra", None)] and everything[("deploy on friday", general)][0] < everything[("deploy", general)][-1]
