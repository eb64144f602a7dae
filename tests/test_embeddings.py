"""Embeddings on a real database: jobs in the background, restarts, provider switches, semantic search."""
from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np
import pytest

from core import chat, embeddings, jobs, replies, search
from core.embeddings import Embedder, local_provider
from core.embeddings.providers import ERROR_MAX

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
    from core.store import connect

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
        gate.set()
        until(lambda: embeddings.backlog(db, provider.name) == 0)
    finally:
        gate.set()
        embedder.stop()
    assert len(vectors_per_message(db)) == 21
    assert len(search.search_messages(db, "provider hangs", channel_id=general)) == 20


def test_open_ai_replies_are_embedded_once_finished(db, ann):
    channel = chat.create_channel(db, "asks")  # the AI answers every message here
    asked = chat.send_message(db, channel, ann, "what is the plan")
    provider = Counting()
    embedder = Embedder(db, provider)
    drain(embedder)
    assert set(vectors_per_message(db)) == {asked}  # the pending reply waits
    assert embeddings.active_provider(db) == provider.name  # an open reply does not hold search back
    job = jobs.claim_next_job(db)
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
        assert embeddings.status(db) == {"semantic": False, "provider": new.name, "backlog": 2, "fallback": None}
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
        until(lambda: embeddings.semantic_ready(db) and embeddings.backlog(db, embedder.provider.name) == 0)

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


# the OpenAI provider, through the real SDK over HTTP ----------------------------------
@pytest.fixture
def embeddings_server():
    """A local OpenAI-compatible /v1/embeddings: vectors from the local model, in reversed order as the API may."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen, mode = [], {"status": 200, "size": embeddings.DIMENSIONS}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if mode["status"] != 200:
                self.send_response(mode["status"])
                payload = {"error": {"message": "boom", "type": "server_error"}}
            else:
                self.send_response(200)
                vectors = local_provider().embed(body["input"])
                data = [{"object": "embedding", "index": i, "embedding": [float(x) for x in v[: mode["size"]]]}
                        for i, v in enumerate(vectors)]
                payload = {"object": "list", "data": data[::-1], "model": body["model"],
                           "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            raw = json.dumps(payload).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen, mode
    server.shutdown()
    server.server_close()


def test_openai_provider_asks_for_256_dimensions_and_keeps_order(embeddings_server):
    import openai

    base_url, seen, mode = embeddings_server
    client = openai.OpenAI(api_key="test-key", base_url=base_url, max_retries=0)
    provider = embeddings.OpenAIProvider(client, "text-embedding-3-small")
    texts = ["We ship the new version on Friday", "I had pasta", "x" * 20_000]
    vectors = provider.embed(texts)
    assert np.allclose(vectors, local_provider().embed(texts), atol=1e-5)  # in input order despite reversed data
    assert seen[-1]["model"] == "text-embedding-3-small" and seen[-1]["dimensions"] == embeddings.DIMENSIONS
    assert len(seen[-1]["input"][2]) == embeddings.EMBED_CHARS  # long messages are cut to the model's input
    mode["size"] = 10
    with pytest.raises(ValueError, match="wrong size"):
        provider.embed(texts)


def test_embedder_over_the_api_retries_after_a_server_error(db, ann, general, embeddings_server):
    import openai

    base_url, seen, mode = embeddings_server
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    provider = embeddings.OpenAIProvider(openai.OpenAI(api_key="k", base_url=base_url, max_retries=0))
    embedder = Embedder(db, provider)
    mode["status"] = 500
    with pytest.raises(openai.InternalServerError):
        embedder.run_once()
    assert db.rows("SELECT state, attempts FROM embedding_jobs") == [("pending", 1)]  # given back, not lost
    mode["status"] = 200
    drain(embedder)
    assert len(vectors_per_message(db)) == 1 and embeddings.active_provider(db) == provider.name


def test_vector_index_tops_up_replaces_and_filters(db, ann, general):
    other = chat.create_channel(db, "other", reply_policy="off")
    ids = [chat.send_message(db, channel, ann, f"m{i}") for i, channel in enumerate([general, general, general, other])]
    name = "axes/256"
    axis = lambda k: np.eye(embeddings.DIMENSIONS, dtype=np.float32)[k]  # noqa: E731
    embeddings.discover(db, name)

    def write(pairs):
        token = f"t{len(pairs)}{pairs[0][0]}"
        db.write(lambda tx: tx.execute(
            "UPDATE embedding_jobs SET state = 'running', claimed_by = ? WHERE provider = ? AND message_id = ANY(?)",
            [token, name, [mid for mid, _ in pairs]]))
        channels = dict(db.rows("SELECT id, channel_id FROM messages"))
        assert embeddings.store(db, name, token, [(mid, channels[mid], v) for mid, v in pairs]) == len(pairs)

    write([(ids[0], axis(0)), (ids[1], axis(0) + axis(1)), (ids[2], axis(1)), (ids[3], axis(0))])
    index = embeddings.VectorIndex(name)
    assert index.refresh(db) == 4 and index.size == 4
    close = index.nearest(axis(0), 10, 0.5)
    assert [mid for mid, _ in close] == [ids[3], ids[0], ids[1]]  # ties: newest first; axis 1 alone is too far
    assert [mid for mid, _ in index.nearest(axis(0), 10, 0.5, channel_id=general)] == [ids[0], ids[1]]
    assert [mid for mid, _ in index.nearest(axis(0), 10, 0.5, exclude=[ids[0]], before_id=ids[3])] == [ids[1]]
    assert [mid for mid, _ in index.nearest(axis(0), 1, 0.5)] == [ids[3]]

    db.write(lambda tx: tx.execute("INSERT INTO embedding_jobs (message_id, provider, state, created_at) "
                                   "VALUES (?, ?, 'pending', ?) ON CONFLICT DO NOTHING", [ids[2], name, db.clock()]))
    write([(ids[2], axis(0))])  # re-embedded: replaced in place, not added
    assert index.refresh(db) == 1 and index.size == 4
    assert ids[2] in [mid for mid, _ in index.nearest(axis(0), 10, 0.5)]
    before = db.cursors_opened
    assert index.refresh(db) == 0
    assert db.cursors_opened - before == 1  # nothing new: one count, no vectors read


def test_a_retried_reply_is_embedded_again_with_its_new_text(db, ann):
    channel = chat.create_channel(db, "asks")
    chat.send_message(db, channel, ann, "tell me about the plan")
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, job.reply_id, "The plan is", job_id=job.id)
    replies.stop_reply(db, job.reply_id, ann)  # stopped: complete with its text so far, and embedded
    chat.send_message(db, channel, ann, "and the budget?")
    failed = jobs.claim_next_job(db)
    replies.fail_reply(db, failed, "The AI service had an error (HTTP 500). Try again.")
    provider = Counting()
    embedder = Embedder(db, provider)
    drain(embedder)
    assert provider.seen["The plan is"] == 1 and len(vectors_per_message(db)) == 3  # the failed reply has no text

    for reply_id, text in ((job.reply_id, "The plan is to ship on Friday."), (failed.reply_id, "The budget is fine.")):
        replies.retry_reply(db, reply_id, ann)
        replies.finish_reply(db, jobs.claim_next_job(db), text)
    assert embeddings.requeue_changed(db, provider.name) == 2
    assert embeddings.requeue_changed(db, provider.name) == 0  # already queued
    drain(embedder)
    assert provider.seen["The plan is to ship on Friday."] == provider.seen["The budget is fine."] == 1
    assert vectors_per_message(db) == {mid: 1 for mid in vectors_per_message(db)} and len(vectors_per_message(db)) == 4
    assert embeddings.requeue_changed(db, provider.name) == 0


def test_a_query_embedded_inside_a_reply_ends_by_that_replys_deadline():
    """A tool call's search embeds its query in the reply's thread: a hung embeddings API holds it only as long
    as the reply's deadline, not the embeddings client's own timeout (EMBED_TIMEOUT, and its retries)."""
    import socket

    import openai

    from core.config import Settings
    from core.deadline import Deadline

    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        settings = Settings(openai_api_key="k", openai_base_url=f"http://127.0.0.1:{port}/v1", ai_timeout=60)
        provider = embeddings.provider_for(settings)
        assert isinstance(provider, embeddings.OpenAIProvider)
        started = time.monotonic()
        with Deadline(0.5), pytest.raises(openai.APITimeoutError):
            provider.embed(["when is the deploy?"])
        assert time.monotonic() - started < 3  # without the deadline: 10 s a try, 3 tries


# a server without embeddings, through the real SDK over HTTP (tests/fake_openai.py) -----------
def _openai_provider(fake) -> embeddings.OpenAIProvider:
    """The provider the app makes for a key and a base URL (its client retries twice, as in the app)."""
    from core.config import Settings

    provider = embeddings.provider_for(Settings(openai_api_key="test-key", openai_base_url=fake.base_url))
    assert isinstance(provider, embeddings.OpenAIProvider)
    return provider


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "core.embeddings" and r.levelno >= logging.WARNING]


FELL_BACK = ("The AI server has no embeddings (HTTP {status} for text-embedding-3-small), so semantic search "
             "uses the local wordllama model instead.")


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_embeddings_is_said_once_and_search_falls_back_to_wordllama(
        db, ann, general, fake_openai, caplog, status):
    caplog.set_level(logging.INFO, logger="core.embeddings")
    fake_openai.embeddings_status = status
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    chat.send_message(db, general, ann, "I had pasta for lunch")
    provider = _openai_provider(fake_openai)
    local = local_provider().name
    embedder = Embedder(db, provider).start()
    try:
        until(lambda: embeddings.semantic_ready(db) and embeddings.active_provider(db) == local)
        chat.send_message(db, general, ann, "the release notes are in the wiki")  # later messages: local too
        embedder.wake()
        until(lambda: embeddings.backlog(db, local) == 0)
        hits = search.search_messages(db, "when is the release going out")
        assert ("We ship the new version on Friday", "semantic") in [(h.content, h.matched_by) for h in hits]
    finally:
        embedder.stop()
    assert len(fake_openai.embedding_requests) == 1  # asked once: the SDK does not retry it, nor does the Embedder
    said = FELL_BACK.format(status=status)
    assert embeddings.fallback_reason(db) == said
    assert embeddings.status(db) == {"semantic": True, "provider": local, "backlog": 0, "fallback": said}
    (line,) = _warnings(caplog)  # one line, no traceback
    assert not line.exc_info and "\n" not in line.getMessage() and f"HTTP {status}" in line.getMessage()
    # The configured provider's jobs are kept and not counted as attempts: a restart asks the server again.
    assert db.rows("SELECT state, attempts FROM embedding_jobs WHERE provider = ?", [provider.name]) == [
        ("pending", 0), ("pending", 0)]

    again = Embedder(db, provider).start()  # a restart (or new settings): asked once more, said once more
    try:
        assert embeddings.fallback_reason(db) is None
        until(lambda: embeddings.fallback_reason(db) == said and embeddings.semantic_ready(db))
    finally:
        again.stop()
    assert len(fake_openai.embedding_requests) == 2 and len(_warnings(caplog)) == 2


def test_a_search_that_finds_embeddings_gone_falls_back_too(db, ann, general, fake_openai, caplog):
    """All history was embedded by the server, which then lost its embeddings: the first search finds out."""
    caplog.set_level(logging.INFO, logger="core.embeddings")
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    provider = _openai_provider(fake_openai)
    embedder = Embedder(db, provider).start()
    try:
        until(lambda: embeddings.semantic_ready(db) and embeddings.active_provider(db) == provider.name)
        fake_openai.embeddings_status = 404
        hits = search.search_messages(db, "ship")
        assert [(h.content, h.matched_by) for h in hits] == [("We ship the new version on Friday", "keyword")]
        assert embeddings.fallback_reason(db) == FELL_BACK.format(status=404)
        embedder.wake()
        until(lambda: embeddings.semantic_ready(db) and embeddings.active_provider(db) == local_provider().name)
        hits = search.search_messages(db, "when is the release going out")
        assert [(h.content, h.matched_by) for h in hits] == [("We ship the new version on Friday", "semantic")]
    finally:
        embedder.stop()
    assert len(_warnings(caplog)) == 1 and len(fake_openai.embedding_requests) == 2  # the message, then the query


def test_the_pause_after_errors_doubles_up_to_five_minutes():
    assert [embeddings.pause_after(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert embeddings.pause_after(50) == embeddings.ERROR_PAUSE_MAX == 300.0


def test_a_server_error_is_retried_after_a_growing_pause_not_taken_for_missing(
        db, ann, general, fake_openai, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="core.embeddings")
    monkeypatch.setattr(embeddings.worker, "ERROR_PAUSE", 0.2)
    fake_openai.embeddings_status = 500
    chat.send_message(db, general, ann, "We ship the new version on Friday")
    provider = embeddings.OpenAIProvider(fake_openai.client(max_retries=0))  # only the Embedder retries here
    embedder = Embedder(db, provider).start()
    try:
        until(lambda: len(fake_openai.embedding_times) >= 2)
        fake_openai.embeddings_status = 200
        until(lambda: embeddings.active_provider(db) == provider.name)
    finally:
        embedder.stop()
    first, second, third = fake_openai.embedding_times[:3]
    assert second - first >= 0.2 and third - second >= 0.4  # 0.2 s after the first 500, 0.4 s after the second
    assert embeddings.fallback_reason(db) is None
    assert db.rows("SELECT provider FROM message_vectors") == [(provider.name,)]
    failed = _warnings(caplog)
    assert len(failed) == 2 and all(not r.exc_info and "500" in r.getMessage() for r in failed)  # a line each


def test_a_providers_error_is_stored_redacted_and_capped(db, ann, general):
    """What a provider says can carry a proxy's user:password@, a key or a token: embedding_jobs.error keeps none."""

    class Leaky(Counting):
        def embed(self, texts):
            raise ConnectionError(
                "cannot reach https://proxyuser:hunter2@proxy.example/v1/embeddings with api_key=sk-live-123456 "
                "(Authorization: Bearer tok.en-789) " + "x" * 1000 + "\nsecond line")

    chat.send_message(db, general, ann, "hello there")
    with pytest.raises(ConnectionError):
        Embedder(db, Leaky("leaky/256")).run_once()
    (error,) = db.one("SELECT error FROM embedding_jobs")
    assert error.startswith("cannot reach https://proxy.example/v1/embeddings with api_key=*** "
                            "(Authorization: Bearer ***) xxx")
    assert not any(secret in error for secret in ("hunter2", "proxyuser", "sk-live", "tok.en", "second line"))
    assert len(error) == ERROR_MAX and error.endswith("…")
