"""The usage ledger for the embeddings API: indexing and searches on both backends, through the real SDK and the local fake."""
from __future__ import annotations

import json

import pytest
from fake_openai import Script
from test_ai import ai_settings, reply_to, responders, settled  # noqa: F401 (responders: a fixture)

from core import chat, embeddings, limits, search, usage
from core.embeddings import Embedder
from core.limits import Limits, RateLimited


def _paid(db, fake) -> embeddings.OpenAIProvider:
    """An OpenAI provider on the local fake, attached for search, all history embedded and loaded."""
    provider = embeddings.OpenAIProvider(fake.client(max_retries=0), "text-embedding-3-small")
    embeddings.attach(db, provider)
    embedder = Embedder(db, provider)
    while embedder.run_once():
        pass
    embedder.run_once()  # nothing left: the provider becomes the one search uses
    embeddings.attached_index(db).refresh(db)
    assert embeddings.paid_queries(db)
    return provider


def _rows(db) -> list[tuple]:
    return db.rows("SELECT kind, user_id, reply_id, job_id, model, prompt_tokens, completion_tokens, estimated "
                   "FROM ai_usage ORDER BY id")


@pytest.fixture(autouse=True)
def _fresh_counts():
    limits._searches.clear()  # searches counted in memory by earlier tests on a database of the same id
    yield
    limits._searches.clear()


def test_indexing_writes_each_request_to_the_ledger_as_the_apps(db, ann, general, fake_openai):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    _paid(db, fake_openai)
    (request,) = fake_openai.embedding_requests  # one batch, one request
    assert _rows(db) == [("embedding", None, None, None, "text-embedding-3-small", 12, 0, False)]
    assert request["input"] == ["We ship the new version on Friday", "I had pasta for lunch"]
    assert limits.tokens_today(db) == 0  # the daily AI budget counts the chat model's tokens only
    assert usage.tokens_since(db, limits.day_start(db.clock()), kind="embedding") == 12


def test_a_search_query_is_charged_to_who_searches_once(db, ann, general, fake_openai):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    _paid(db, fake_openai)
    bob = chat.create_user(db, "Bob")
    hits = search.search_messages(db, "the new version", by=bob)
    assert [(h.content, h.matched_by) for h in hits] == [("We ship the new version on Friday", "both")]
    search.search_messages(db, "the new version", by=bob, offset=0)  # a page rerun: the vector is kept
    assert _rows(db)[1:] == [("embedding", bob, None, None, "text-embedding-3-small", 3, 0, False)]
    assert len(fake_openai.embedding_requests) == 2  # the message, then the query once


def test_paid_searches_count_from_the_ledger_across_restarts(db, ann, general, fake_openai):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    _paid(db, fake_openai)
    two = Limits(searches_per_minute=2)
    search.search_messages(db, "ship date", by=ann, limits=two)
    search.search_messages(db, "release day", by=ann, limits=two)
    limits._searches.clear()  # a restart, or the next search landing on another replica: memory is empty
    with pytest.raises(RateLimited, match="You have searched 2 times in the last minute"):
        search.search_messages(db, "friday plans", by=ann, limits=two)
    assert len(fake_openai.embedding_requests) == 3  # refused before its query was sent
    bob = chat.create_user(db, "Bob")
    search.search_messages(db, "friday plans", by=bob, limits=two)  # per person


def test_free_searches_stay_counted_in_memory_only(db, ann, general):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    embeddings.attach(db, embeddings.local_provider())  # wordllama: no request, no row
    two = Limits(searches_per_minute=2)
    search.search_messages(db, "ship date", by=ann, limits=two)
    search.search_messages(db, "release day", by=ann, limits=two)
    limits._searches.clear()
    search.search_messages(db, "friday plans", by=ann, limits=two)
    assert _rows(db) == []


def test_a_failed_request_still_leaves_a_row(db, ann, general, fake_openai):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    _paid(db, fake_openai)
    fake_openai.embeddings_status = 500
    hits = search.search_messages(db, "ship", by=ann)  # keyword results still answer
    assert [h.matched_by for h in hits] == ["keyword"]
    assert _rows(db)[-1] == ("embedding", ann, None, None, "text-embedding-3-small", 0, 0, True)  # refused: 0 tokens


def test_a_replys_searches_are_charged_to_its_asker_and_reply(db, ann, general, fake_openai):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    _paid(db, fake_openai)
    with usage.caused_by(ann, reply_id=41, job_id=7):  # as the AI worker runs a reply (its tool calls search)
        search.search_messages(db, "release plans")
        search.related_messages(db, general, "when do we ship the release")
    assert [row[:4] for row in _rows(db)[1:]] == [("embedding", ann, 41, 7)] * 2
    assert usage.cause() == (None, None, None)
    # They are the reply's (capped by its tool limits), not searches the person typed: their allowance is whole.
    limits.check_search(db, Limits(searches_per_minute=1), ann, "x", db.clock(), paid=True)


def test_a_replys_tool_search_through_the_worker_is_charged_to_the_reply(db, ann, general, fake_openai, responders):
    chat.update_channel(db, general, reply_policy="mention")
    chat.send_message(db, general, ann, "The deploy moved to Thursday")
    _paid(db, fake_openai)
    fake_openai.push(Script(text="", tool_calls=[{"name": "search_messages", "arguments": json.dumps({"query": "deploy"})}]),
                     Script(text="Thursday."))
    responders()
    reply_id = reply_to(db, chat.send_message(db, general, ann, "@ai when is the deploy?"))
    settled(db, reply_id)
    job_id = db.one("SELECT id FROM ai_jobs WHERE reply_id = ?", [reply_id])[0]
    assert [(r["kind"], r["user_id"], r["job_id"]) for r in usage.of_reply(db, reply_id)] == [
        ("chat", ann, job_id), ("embedding", ann, job_id), ("chat", ann, job_id)]
