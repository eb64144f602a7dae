"""Embeddings on a real database: jobs in the background, restarts, provider switches, semantic search."""
from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest

from core import chat, embeddings, replies, search
from core.embeddings import Embedder, local_provider

WAIT = 20.0  # seconds a test waits for the background worker before it fails


class Counting:
    """The local provider under another name, counting every text it embeds; ``gate`` can hold it."""

    min_similarity = embeddings.WordLlamaProvider.min_similarity

    def __init__(self, name: str = "counting/256", gate: threading.Event | None = None, fail: int = 0) -> None:
        self.name = name
        self.gate = gate
        self.fail = fail  # raise on this many calls first, as a provider that is down would
        self.calls = 0
        self.seen: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def embed(self, texts):
        if self.gate is not None and not self.gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        with self._lock:
            self.calls += 1
            if self.calls <= self.fail:
                raise ConnectionError("embedding service unreachable")
            self.seen.update(texts)
        return local_provider().embed(texts)


@pytest.fixture
def ann(db):
    return chat.create_user(db, "Ann")


@pytest.fixture
def general(db):
    return chat.create_channel(db, "general", reply_policy="off")


def until(check, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "gave up waiting for the embedder"
        time.sleep(0.02)
    return result


def drain(embedder: Embedder) -> None:
    """Run the embedder's loop body in this thread until nothing is left."""
    while embedder.run_once():
        pass
    embedder.run_once()  # nothing left: activates the provider


def vectors_per_message(db) -> dict[int, int]:
    return dict(db.rows("SELECT message_id, count(*) FROM message_vectors GROUP BY message_id"))


def test_local_provider_is_offline_unit_length_and_meaningful():
    provider = local_provider()
    vectors = provider.embed(["When is the release going out?", "We ship the new version on Friday", "I had pasta"])
    assert vectors.shape == (3, embeddings.DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related >= provider.min_similarity > unrelated


def test_every_finished_message_gets_one_vector(db, ann, general):
    ids = [chat.send_message(db, general, ann, f"note number {i} about the roadmap") for i in range(150)]
    ai = chat.write_agent_response(db, general, "The roadmap is on the wiki.")
    provider = Counting()
    drain(Embedder(db, provider, batch=64))
    assert vectors_per_message(db) == {message_id: 1 for message_id in [*ids, ai]}
    assert provider.calls == 3 and set(provider.seen.values()) == {1}
    assert db.one("SELECT count(*) FROM embedding_jobs")[0] == 0
    assert embeddings.active_provider(db) == provider.name


def test_jobs_survive_a_restart_none_lost_none_done_twice(tmp_path):
    from core.db import connect

    path = str(tmp_path / "restart.duckdb")
    db = connect(path)
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    ids = [chat.send_message(db, general, ann, f"message {i}") for i in range(100)]
    first = Counting()
    crashed = Embedder(db, first, batch=30)
    assert crashed.run_once() == 30  # one batch embedded and stored
    embeddings.discover(db, first.name)
    lost = embeddings.claim(db, first.name, crashed.token, 30)  # claimed, then the process dies mid-batch
    assert len(lost) == 30
    db.close()

    db = connect(path)
    try:
        assert db.one("SELECT count(*) FROM embedding_jobs WHERE state = 'running'")[0] == 30  # what the crash left
        second = Counting()
        embedder = Embedder(db, second).start()
        try:
            until(lambda: embeddings.active_provider(db) == second.name)
        finally:
            embedder.stop()
        assert vectors_per_message(db) == {message_id: 1 for message_id in ids}  # none lost
        assert set(first.seen) | set(second.seen) == {f"message {i}" for i in range(100)}
        assert not set(first.seen) & set(second.seen)  # none embedded twice
        assert set(second.seen.values()) == {1}
        # The crashed worker, were it alive after all, may not write what it held any more.
        late = [(mid, channel, np.ones(embeddings.DIMENSIONS)) for mid, channel, _ in lost]
        assert embeddings.store(db, first.name, crashed.token, late) == 0
        assert db.one("SELECT count(*) FROM message_vectors WHERE vector[1] = 1")[0] == 0
    finally:
        db.close()


def test_two_workers_never_embed_the_same_message(db, ann, general):
    ids = [chat.send_message(db, general, ann, f"line {i}") for i in range(400)]
    provider = Counting()
    workers = [Embedder(db, provider, batch=16).start() for _ in range(2)]
    try:
        until(lambda: embeddings.active_provider(db) == provider.name)
    finally:
        for worker in workers:
            worker.stop()
    assert vectors_per_message(db) == {message_id: 1 for message_id in ids}
    assert set(provider.seen.values()) == {1} and len(provider.seen) == 400
    assert all(worker.embedded > 0 for worker in workers)


def test_no_send_waits_for_an_embedding(db, ann, general):
    gate = threading.Event()
    provider = Counting(gate=gate)
    embedder = Embedder(db, provider).start()
    try:
        chat.send_message(db, general, ann, "first: the embedder takes it and blocks")
        until(lambda: db.one("SELECT count(*) FROM embedding_jobs WHERE state = 'running'")[0] == 1)
        sent = [chat.send_message(db, general, ann, f"sent while the provider hangs {i}") for i in range(20)]
        assert len(sent) == 20 and provider.calls == 0  # every send returned while the only embedding hangs
        assert search.search_messages(db, "provider hangs", channel_id=general)  # keyword search answers too
        gate.set()
        until(lambda: embeddings.active_provider(db) == provider.name)
    finally:
        gate.set()
        embedder.stop()
    assert len(vectors_per_message(db)) == 21


def test_open_ai_replies_are_embedded_once_finished(db, ann):
    channel = chat.create_channel(db, "asks")  # the AI answers every message here
    asked = chat.send_message(db, channel, ann, "what is the plan")
    provider = Counting()
    embedder = Embedder(db, provider)
    drain(embedder)
    assert set(vectors_per_message(db)) == {asked}  # the pending reply waits
    assert embeddings.active_provider(db) == provider.name  # an open reply does not hold search back
    job = replies.claim_next_job(db)
    replies.finish_reply(db, job, "The plan is to ship on Friday.")
    drain(embedder)
    assert set(vectors_per_message(db)) == {asked, job.reply_id}


def test_a_failing_provider_is_retried_then_gives_up(db, ann, general):
    chat.send_message(db, general, ann, "hello there")
    provider = Counting(fail=embeddings.MAX_ATTEMPTS)
    embedder = Embedder(db, provider)
    for _ in range(embeddings.MAX_ATTEMPTS):
        with pytest.raises(ConnectionError):
            embedder.run_once()
    assert db.rows("SELECT state, attempts, error FROM embedding_jobs") == [
        ("failed", embeddings.MAX_ATTEMPTS, "embedding service unreachable")
    ]
    drain(embedder)  # a failed message does not hold semantic search back forever
    assert embeddings.active_provider(db) == provider.name
    assert [h.content for h in search.search_messages(db, "hello")] == ["hello there"]


def test_switching_provider_reembeds_while_search_stays_keyword_only(db, ann, general):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    old = Counting("old/256")
    first = Embedder(db, old).start()
    until(lambda: embeddings.active_provider(db) == old.name)
    assert [h.matched_by for h in search.search_messages(db, "when is the release going out")] == ["semantic"]
    first.stop()

    gate = threading.Event()
    new = Counting("new/256", gate=gate)
    second = Embedder(db, new).start()
    try:
        assert embeddings.status(db) == {"semantic": False, "provider": new.name, "backlog": 2}
        assert search.search_messages(db, "when is the release going out") == []  # keyword only meanwhile
        assert [h.matched_by for h in search.search_messages(db, "ship")] == ["keyword"]
        gate.set()
        until(lambda: embeddings.active_provider(db) == new.name)
        hits = search.search_messages(db, "when is the release going out")
        assert [(h.content, h.matched_by) for h in hits] == [("We ship the new version on Friday", "semantic")]
    finally:
        gate.set()
        second.stop()
    assert db.rows("SELECT DISTINCT provider FROM message_vectors") == [(new.name,)]
    assert new.seen["We ship the new version on Friday"] == new.seen["I had pasta for lunch"] == 1


# semantic search -------------------------------------------------------------------
@pytest.fixture
def semantic(db):
    """Search with vectors: a started Embedder over the local provider (stopped afterwards)."""
    embedder = Embedder(db, local_provider()).start()

    def settle():
        embedder.wake()
        until(lambda: embeddings.active_provider(db) and embeddings.backlog(db, embedder.provider.name) == 0)

    yield settle
    embedder.stop()


def test_semantic_search_finds_a_paraphrase_and_fuses_with_keywords(db, ann, general, semantic):
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    chat.send_message(db, general, ann, "the release notes are in the wiki")
    semantic()
    hits = search.search_messages(db, "when is the release going out")
    found = {h.content: h.matched_by for h in hits}
    assert found["We ship the new version on Friday"] == "semantic"  # no word in common
    assert "I had pasta for lunch" not in found
    hits = search.search_messages(db, "release notes")
    assert (hits[0].content, hits[0].matched_by) == ("the release notes are in the wiki", "both")


def test_semantic_hits_stay_in_the_searched_channel(db, ann, general, semantic):
    other = chat.create_channel(db, "other", reply_policy="off")
    chat.send_message(db, other, ann, "We ship the new version on Friday")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    semantic()
    assert search.search_messages(db, "when is the release going out", channel_id=general) == []
    assert [h.channel_id for h in search.search_messages(db, "when is the release going out")] == [other]


def test_exact_phrase_stays_first_with_semantic_on(db, ann, general, semantic):
    for text in ["deploy friday: the new deploy process", "on friday we will deploy the deploy tool",
                 "the deployment happens at the end of the week"]:
        chat.send_message(db, general, ann, text)
    exact = chat.send_message(db, general, ann, "ok so we deploy on friday")
    semantic()
    hits = search.search_messages(db, "deploy on friday")
    assert hits[0].message_id == exact and hits[0].matched_by in ("keyword", "both")


def test_related_messages_uses_meaning_too(db, ann, general, semantic):
    old = chat.send_message(db, general, ann, "Bob: the schema change to postgres went fine")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    recent = chat.send_message(db, general, ann, "What did Bob say about the database migration?")
    semantic()
    hits = search.related_messages(db, general, "What did Bob say about the database migration?", exclude_ids=[recent])
    assert hits[0].message_id == old
    assert recent not in [h.message_id for h in hits]


def test_provider_follows_the_settings(monkeypatch):
    from core.config import load_settings

    assert isinstance(embeddings.provider_for(load_settings()), embeddings.WordLlamaProvider)  # no key: local
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    provider = embeddings.provider_for(load_settings())
    assert isinstance(provider, embeddings.OpenAIProvider)
    assert provider.name == "openai/text-embedding-3-small/256"
    monkeypatch.setenv("EMBEDDING_MODEL", "text-embedding-3-large")
    assert embeddings.provider_for(load_settings()).name == "openai/text-embedding-3-large/256"
    monkeypatch.setenv("EMBEDDING_MODEL", "wordllama")
    assert isinstance(embeddings.provider_for(load_settings()), embeddings.WordLlamaProvider)
