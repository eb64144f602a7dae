"""Tests for tests/fake_openai.py using the REAL openai SDK over HTTP (nothing patched)."""

import json
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import openai  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fake_openai import FakeOpenAI, Script, split_words  # noqa: E402

MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the channel"},
]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def _stream(client, **kw):
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("messages", MSGS)
    return client.chat.completions.create(stream=True, **kw)


def _text(chunks):
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_streaming_round_trip(fake):
    fake.push(Script(text="Hello there, channel!  How are you?\nFine."))
    chunks = list(_stream(fake.client(max_retries=0)))
    assert _text(chunks) == "Hello there, channel!  How are you?\nFine."
    # first chunk: role only, like OpenAI
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    # several content deltas, then a final empty delta with finish_reason
    assert len(chunks) >= 2 + 5
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_explicit_chunks_and_default_script():
    with FakeOpenAI(default=Script(text="default reply")) as fake:
        fake.push(Script(chunks=["a", "b c", " d"]))
        client = fake.client(max_retries=0)
        chunks = list(_stream(client))
        assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["a", "b c", " d"]
        # queue empty -> default script
        assert _text(_stream(client)) == "default reply"
        assert _text(_stream(client)) == "default reply"
    with FakeOpenAI() as fake:
        assert _text(_stream(fake.client(max_retries=0))) == Script().text


def test_usage_chunk_with_include_usage(fake):
    fake.push(Script(text="one two three four"))
    chunks = list(_stream(fake.client(max_retries=0), stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert last.usage.prompt_tokens == len("You are terse. Say hello to the channel".split())
    assert last.usage.total_tokens == last.usage.prompt_tokens + 4
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert _text(chunks) == "one two three four"


def test_no_usage_chunk_without_include_usage(fake):
    chunks = list(_stream(fake.client(max_retries=0)))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_request_body_recorded(fake):
    list(_stream(fake.client(max_retries=0), model="my-model", temperature=0.2))
    reqs = fake.wait_requests(1, timeout=2)
    assert len(reqs) == 1
    body = reqs[0]
    assert body["model"] == "my-model"
    assert body["messages"] == MSGS
    assert body["stream"] is True
    assert body["temperature"] == 0.2
    assert fake.requests == reqs


def test_wait_requests_times_out(fake):
    with pytest.raises(TimeoutError):
        fake.wait_requests(1, timeout=0.05)


def test_stream_really_streams(fake):
    # 5 content chunks, 0.3 s apart: the first must arrive long before the end.
    fake.push(Script(chunks=["a ", "b ", "c ", "d ", "e"], chunk_delay=0.3))
    client = fake.client(max_retries=0)
    t0 = time.monotonic()
    first_content_at = None
    texts = []
    for chunk in _stream(client):
        if chunk.choices and chunk.choices[0].delta.content:
            if first_content_at is None:
                first_content_at = time.monotonic() - t0
            texts.append(chunk.choices[0].delta.content)
    total = time.monotonic() - t0
    assert "".join(texts) == "a b c d e"
    assert first_content_at is not None and first_content_at < 0.6
    assert total >= 1.2  # 4 gaps between content chunks + 1 before the finish chunk


def test_delay_before_headers(fake):
    fake.push(Script(text="late", delay=0.3))
    t0 = time.monotonic()
    resp = fake.client(max_retries=0).chat.completions.create(model="m", messages=MSGS)
    assert time.monotonic() - t0 >= 0.3
    assert resp.choices[0].message.content == "late"


def test_429_exhausts_retries(fake):
    fake.push(Script(status=429, retry_after=0.05, repeat=3), Script(text="never reached"))
    client = fake.client(max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as excinfo:
        _stream(client)
    elapsed = time.monotonic() - t0
    assert len(fake.requests) == 3  # max_retries + 1
    assert excinfo.value.status_code == 429
    assert excinfo.value.code == "rate_limit_exceeded"
    assert excinfo.value.body["type"] == "requests"
    assert excinfo.value.response.headers["retry-after"] == "0.05"
    # Retry-After honoured: 2 waits of 0.05 s, not the ~0.5 s exponential back-off
    assert 0.1 <= elapsed < 0.9
    assert fake.pending == 1
    # the next script is still queued
    assert _text(_stream(client)) == "never reached"


def test_500_then_success(fake):
    fake.push(Script(status=500, retry_after=0.01), Script(text="recovered"))
    client = fake.client(max_retries=2)
    resp = client.chat.completions.create(model="m", messages=MSGS)
    assert resp.choices[0].message.content == "recovered"
    assert len(fake.requests) == 2
    assert fake.requests[0] == fake.requests[1]


def test_500_then_success_streaming(fake):
    fake.push(Script(status=503, retry_after=0.01), Script(text="streamed after retry"))
    assert _text(_stream(fake.client(max_retries=1))) == "streamed after retry"
    assert len(fake.requests) == 2


def test_error_without_retries(fake):
    fake.push(Script(status=500))
    with pytest.raises(openai.InternalServerError) as excinfo:
        fake.client(max_retries=0).chat.completions.create(model="m", messages=MSGS)
    assert excinfo.value.status_code == 500
    assert excinfo.value.body["type"] == "server_error"
    assert len(fake.requests) == 1


def test_hang_times_out(fake):
    fake.push(Script(hang=True))
    client = fake.client(timeout=0.5, max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _stream(client)
    assert time.monotonic() - t0 < 2
    assert len(fake.requests) == 1  # recorded even though never answered


def test_stop_releases_hanging_handlers():
    fake = FakeOpenAI().start()
    fake.push(Script(hang=True))
    errors = []

    def call():
        try:
            fake.client(timeout=5, max_retries=0).chat.completions.create(model="m", messages=MSGS)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    fake.wait_requests(1, timeout=2)
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.5
    t.join(timeout=3)
    assert not t.is_alive()
    # the server hung up without answering -> connection error, not a timeout
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)


def test_cut_stream(fake):
    # openai 3.52.0 behaviour on a stream whose socket is shut down mid-body
    # (no finish_reason, no [DONE]): the chunks that arrived are yielded, then
    # iteration RAISES openai.APIConnectionError (cause: httpx2.RemoteProtocolError
    # "incomplete chunked read").  It does NOT end silently.
    fake.push(Script(chunks=["one ", "two ", "three ", "four ", "five"], cut_after=2))
    collected = []
    raised = None
    try:
        for chunk in _stream(fake.client(max_retries=2)):
            collected.append(chunk)
    except Exception as exc:  # noqa: BLE001 - record whatever the SDK does
        raised = exc
    assert _text(collected) == "one two "
    assert not any(c.choices and c.choices[0].finish_reason == "stop" for c in collected)
    assert not any(c.choices and c.choices[0].finish_reason for c in collected)
    assert isinstance(raised, openai.APIConnectionError), f"SDK behaviour changed: {raised!r}"
    assert not isinstance(raised, openai.APITimeoutError)
    # mid-stream failures are not retried by the SDK
    assert len(fake.requests) == 1


def test_cut_before_any_content(fake):
    fake.push(Script(text="never seen", cut_after=0))
    collected = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in _stream(fake.client(max_retries=0)):
            collected.append(chunk)
    assert _text(collected) == ""
    assert [c.choices[0].delta.role for c in collected] == ["assistant"]


def test_malformed_event_mid_stream(fake):
    # one event whose data is not JSON: the SDK yields what came before, then raises json's own error
    fake.push(Script(chunks=["one ", "two ", "three"], malformed_after=2))
    collected = []
    with pytest.raises(json.JSONDecodeError):
        for chunk in _stream(fake.client(max_retries=0)):
            collected.append(chunk)
    assert _text(collected) == "one two "


def test_error_event_mid_stream(fake):
    fake.push(Script(chunks=["one ", "two ", "three"], error_after=1, error_message="overloaded, sorry"))
    collected = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in _stream(fake.client(max_retries=0)):
            collected.append(chunk)
    assert _text(collected) == "one "
    assert not isinstance(raised.value, openai.APIStatusError)
    assert raised.value.message == "overloaded, sorry"
    assert raised.value.body["message"] == "overloaded, sorry" and raised.value.body["type"] == "server_error"



@pytest.mark.parametrize("after, text", [(0, ""), (3, "one two three ")])
def test_stream_that_ends_cleanly_without_a_finish_reason(fake, after, text):
    # [DONE] and a complete body, but no finish-reason chunk and no usage: iteration just stops
    fake.push(Script(chunks=["one ", "two ", "three ", "four"], end_after=after))
    chunks = list(_stream(fake.client(max_retries=0), stream_options={"include_usage": True}))
    assert _text(chunks) == text
    assert not any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert [p for _, p in fake.chunks_sent] == ["one ", "two ", "three "][:after]


def test_a_scripted_refusal_names_its_code_and_param(fake):
    fake.push(Script(status=400, error_message="'tool_choice' is not allowed here", error_code="bad_choice",
                     error_param="tool_choice"))
    with pytest.raises(openai.BadRequestError) as raised:
        _stream(fake.client(max_retries=0))
    error = raised.value
    assert (error.message.endswith("'tool_choice' is not allowed here"), error.code, error.param) == (
        True, "bad_choice", "tool_choice")
    fake.push(Script(status=400))  # the usual body: the status's code, no param
    with pytest.raises(openai.BadRequestError) as raised:
        _stream(fake.client(max_retries=0))
    assert (raised.value.code, raised.value.param) == (None, None)
    assert "simulated HTTP 400" in raised.value.message


def test_refusing_tools_names_the_tools_param_as_openai_does(fake):
    fake.reject_tools = True
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as raised:
        _stream(fake.client(max_retries=0), tools=tools)
    assert (raised.value.code, raised.value.param) == ("unsupported_parameter", "tools")
    assert "'tools' is not supported" in raised.value.message


def test_a_context_limit_refuses_requests_over_it_as_too_long(fake):
    fake.context_limit = 8  # MSGS hold 8 words
    assert _text(_stream(fake.client(max_retries=0))) == "Hello from the fake model."
    longer = [*MSGS, {"role": "user", "content": "and one more"}]
    with pytest.raises(openai.BadRequestError) as raised:
        _stream(fake.client(max_retries=0), messages=longer)
    error = raised.value
    assert (error.code, error.param) == ("context_length_exceeded", "messages")
    assert "maximum context length is 8 tokens" in error.message and "11 tokens" in error.message
    assert fake.pending == 0 and len(fake.requests) == 2  # recorded, no script used
    fake.reset()
    assert fake.context_limit is None


def test_non_stream_response(fake):
    fake.push(Script(text="Plain answer here"))
    resp = fake.client(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert resp.choices[0].message.content == "Plain answer here"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "gpt-4o-mini"
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 3
    assert "stream" not in fake.requests[0]


def test_finish_reason_length(fake):
    fake.push(Script(text="truncated repl", finish_reason="length"), Script(text="x", finish_reason="length"))
    client = fake.client(max_retries=0)
    chunks = list(_stream(client))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert _text(chunks) == "truncated repl"
    resp = client.chat.completions.create(model="m", messages=MSGS)
    assert resp.choices[0].finish_reason == "length"


def test_repeat_and_order(fake):
    fake.push(Script(text="A", repeat=2), Script(text="B"))
    client = fake.client(max_retries=0)
    got = [client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content for _ in range(4)]
    assert got == ["A", "A", "B", Script().text]


def test_models_and_404(fake):
    client = fake.client(max_retries=0)
    models = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in models
    assert client.models.retrieve("whatever").id == "whatever"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="e", prompt="x")  # the legacy endpoint is not served
    assert fake.requests == []  # only chat completions are recorded


def test_embeddings_are_deterministic_unit_vectors_sharing_words_point_alike(fake):
    from fake_openai import embed

    client = fake.client(max_retries=0)
    texts = ["The deploy is on Friday", "friday: the DEPLOY", "Lunch at noon"]
    vectors = [d.embedding for d in client.embeddings.create(model="text-embedding-3-small", input=texts).data]
    assert len(vectors) == 3 and len(vectors[0]) == 1536  # base64 on the wire, as the SDK asks by default
    assert all(abs(sum(v * v for v in vector) - 1) < 1e-5 for vector in vectors)
    same = sum(a * b for a, b in zip(vectors[0], vectors[1]))
    other = sum(a * b for a, b in zip(vectors[0], vectors[2]))
    assert same > 0.7 and abs(other) < 0.3
    small = client.embeddings.create(model="m", input="The deploy is on Friday", dimensions=256, encoding_format="float")
    assert small.data[0].embedding == pytest.approx(embed("The deploy is on Friday", 256))
    assert small.usage.prompt_tokens == 5
    assert [r["input"] for r in fake.embedding_requests] == [texts, "The deploy is on Friday"]
    assert fake.requests == []
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input=[])


@pytest.mark.parametrize("status, error", [(404, openai.NotFoundError), (405, openai.APIStatusError),
                                           (500, openai.InternalServerError)])
def test_a_server_without_embeddings_answers_404_or_405_and_the_sdk_retries_only_a_500(fake, status, error):
    fake.embeddings_status = status
    with pytest.raises(error) as caught:
        fake.client(max_retries=1).embeddings.create(model="m", input="hello")
    assert caught.value.status_code == status
    assert len(fake.embedding_requests) == (2 if status == 500 else 1) == len(fake.embedding_times)
    fake.reset()
    assert fake.client(max_retries=0).embeddings.create(model="m", input="hello").data


def test_streamed_tool_calls_arrive_in_pieces_and_a_mode_refuses_tools(fake):
    arguments = '{"query": "deploy on monday", "channel": "general"}'
    fake.push(Script(text="Let me look.", tool_calls=[{"name": "search_messages", "arguments": arguments, "id": "c1"}]))
    tools = [{"type": "function", "function": {"name": "search_messages", "parameters": {"type": "object"}}}]
    chunks = list(_stream(fake.client(max_retries=0), tools=tools))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id == "c1" and deltas[0].function.name == "search_messages"
    pieces = [d.function.arguments for d in deltas[1:]]
    assert len(pieces) > 3 and "".join(pieces) == arguments and all(d.index == 0 for d in deltas)
    assert _text(chunks) == "Let me look."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    fake.reject_tools = True
    with pytest.raises(openai.BadRequestError):
        _stream(fake.client(max_retries=0), tools=tools)
    _stream(fake.client(max_retries=0))  # a request without tools is served
    assert len(fake.requests) == 3


def test_concurrent_streams(fake):
    fake.push(Script(text="same reply for all", chunk_delay=0.05, repeat=4))
    client = fake.client(max_retries=0)
    results = []

    def run():
        results.append(_text(_stream(client)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert results == ["same reply for all"] * 4
    assert len(fake.wait_requests(4, timeout=1)) == 4


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_split_words_round_trips(text):
    assert "".join(split_words(text)) == text
    assert all(piece for piece in split_words(text))


def test_streamed_pieces_are_logged_with_the_time_they_were_written(fake):
    fake.push(Script(chunks=["first ", "second"], chunk_delay=0.1))
    before = time.time()
    chunks = _stream(fake.client(max_retries=0))
    first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
    received = time.time()
    list(chunks)
    (sent_first, piece_first), (sent_second, piece_second) = fake.chunks_sent
    assert (piece_first, piece_second) == ("first ", "second") and first.choices[0].delta.content == "first "
    assert before <= sent_first <= received  # logged when written, before the client read it
    assert sent_second - sent_first >= 0.09
    fake.reset()
    assert fake.chunks_sent == []
