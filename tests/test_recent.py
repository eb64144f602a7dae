"""The recent-message cache: its own rules, and coherence with DuckDB after any mix of writes."""
from __future__ import annotations

import random
from datetime import datetime

import pytest

from core import chat, jobs, replies
from core.errors import ValidationError
from core.recent import CACHE_DEPTH, Message, RecentMessages
from core.store import connect

WHEN = datetime(2025, 1, 1)


def message(message_id: int, channel_id: int = 1, content: str = "hi") -> Message:
    return Message(message_id, channel_id, 1, "Ann", content, "complete", None, WHEN, WHEN)


def test_fill_keeps_the_first_list():
    recent = RecentMessages()
    assert recent.get(1) is None
    kept = recent.fill(1, [message(2), message(1)])
    assert recent.fill(1, [message(9)]) == kept  # a late filler does not replace a list writers already extend
    assert [m.id for m in recent.get(1)] == [2, 1]


def test_a_fill_that_raced_with_a_change_is_not_kept():
    recent = RecentMessages()
    token = recent.version(1)
    recent.invalidate(1)  # another process committed while this one read the database
    rows = recent.fill(1, [message(1)], token)
    assert [m.id for m in rows] == [1] and recent.get(1) is None  # answered, but not cached
    token = recent.version(1)
    recent.fill(1, [message(1)], token)
    assert [m.id for m in recent.get(1)] == [1]


def test_adds_reported_out_of_order_keep_the_list_ordered():
    recent = RecentMessages()
    recent.fill(1, [message(1)])
    recent.add(message(3))
    recent.add(message(2))  # committed before 3, reported after it
    assert [m.id for m in recent.get(1)] == [3, 2, 1]


def test_invalidate_all_moves_every_version_and_tells_subscribers():
    recent = RecentMessages()
    recent.fill(1, [message(1)])
    recent.add(message(2))
    seen = []
    unsubscribe = recent.subscribe(lambda channel_id, version: seen.append((channel_id, version)))
    before = {c: recent.version(c) for c in (0, 1, 2)}
    recent.invalidate_all()
    assert recent.get(1) is None
    assert all(recent.version(c) != before[c] for c in before)
    recent.add(message(3))
    assert seen == [(None, recent.version(5)), (1, recent.version(1))]
    unsubscribe()
    recent.add(message(4))
    assert len(seen) == 2


def test_fill_and_add_keep_only_the_newest():
    recent = RecentMessages()
    recent.fill(1, [message(i) for i in range(CACHE_DEPTH + 10, 0, -1)])
    assert len(recent.get(1)) == CACHE_DEPTH
    recent.add(message(100))
    assert len(recent.get(1)) == CACHE_DEPTH
    assert recent.get(1)[0].id == 100 and recent.get(1)[-1].id == 12


def test_add_to_an_unread_channel_only_bumps_its_version():
    recent = RecentMessages()
    recent.add(message(1, channel_id=7))
    assert recent.get(7) is None  # the first read fills from DuckDB
    assert recent.version(7) != 0 and recent.version(8) == 0


def test_replace_and_versions():
    recent = RecentMessages()
    recent.fill(1, [message(2), message(1)])
    recent.fill(2, [message(3, channel_id=2)])
    one, two = recent.version(1), recent.version(2)
    recent.replace(message(1, content="edited"))
    assert [m.content for m in recent.get(1)] == ["hi", "edited"]
    assert recent.version(1) > one and recent.version(2) == two
    recent.replace(message(99, content="not cached"))  # too old to be cached: only the version moves
    assert [m.id for m in recent.get(1)] == [2, 1]


# coherence with DuckDB --------------------------------------------------------
LIMITS = (10, 50, 60)
WORDS = ["hello", "@ai", "what", "is", "this?", "😀", "'quoted'", "%", "--", "\n", "مرحبا"]


class Sequence:
    """A seeded random mix of every write the app makes, checked against DuckDB after each step."""

    def __init__(self, db, rng: random.Random):
        self.db, self.rng = db, rng
        self.users = [chat.create_user(db, name) for name in ("Ann", "Bob", "Cy")]
        self.channels = [
            chat.create_channel(db, "every"),
            chat.create_channel(db, "mention", reply_policy="mention"),
            chat.create_channel(db, "off", reply_policy="off"),
            chat.create_channel(db, "late", reply_policy="every"),  # read for the first time halfway through
        ]
        self.running: list = []  # jobs a pretend worker holds
        self.late_read = False

    def text(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 5))) + " ."

    def ai_message(self):
        rows = self.db.rows("SELECT id, channel_id FROM messages WHERE author_id IS NULL")
        return self.rng.choice(rows) if rows else (None, None)

    def step(self) -> set[int] | None:
        """Do one random thing; return the channels it may change (None: any)."""
        rng, db = self.rng, self.db
        kind = rng.choices(
            ["send", "agent", "claim", "stream", "finish", "fail", "stop", "retry", "record", "recover", "page"],
            weights=[30, 4, 10, 16, 7, 5, 6, 6, 4, 2, 10],
        )[0]
        if kind == "send":
            channel_id = rng.choices(self.channels, weights=[5, 2, 2, 2])[0]  # one deep channel, past the cache
            chat.send_message(db, channel_id, rng.choice(self.users), self.text())
            return {channel_id}
        if kind == "agent":
            channel_id = rng.choice(self.channels)
            chat.write_agent_response(db, channel_id, self.text())
            return {channel_id}
        if kind == "claim":
            job = jobs.claim_next_job(db)
            if job is not None:
                self.running.append(job)
            return set()  # a job row only: no message changes
        if kind == "recover":
            self.running.clear()  # the pretend worker died
            jobs.recover_interrupted(db, everything=True)
            return None
        if kind == "page":
            channel_id = rng.choice(self.channels[:3])
            newest = chat.list_messages(db, channel_id, limit=rng.randint(1, 70))
            if newest:
                older = chat.list_messages(db, channel_id, limit=10, before_id=newest[-1].id)
                assert all(m.id < newest[-1].id for m in older)
            return set()
        if kind in ("stop", "retry"):
            message_id, channel_id = self.ai_message()
            if message_id is None:
                return set()
            if kind == "stop":
                replies.stop_reply(db, message_id, rng.choice(self.users), admin=True)
            else:
                before = chat.get_message(db, message_id)
                try:
                    replies.retry_reply(db, message_id, rng.choice(self.users), admin=True)
                except ValidationError as refused:
                    assert (before.status == "complete" and not before.stopped) or str(refused) == replies.AI_OFF
            return {channel_id}
        if not self.running:
            return set()
        job = rng.choice(self.running)
        if kind == "stream":
            if not replies.stream_reply(db, job.reply_id, self.text()):
                replies.finish_reply(db, job, "ignored: the reply was stopped")  # what the worker does
                self.running.remove(job)
        elif kind == "record":
            replies.record_request(db, job.reply_id, [{"role": "user", "content": self.text()}], "gpt-4o-mini")
        elif kind == "finish":
            replies.finish_reply(db, job, self.text(), prompt_tokens=rng.randint(1, 99), completion_tokens=7,
                                 ttft_ms=rng.random() * 100, total_ms=rng.random() * 1000)
            self.running.remove(job)
        else:
            replies.fail_reply(db, job, "The AI service failed.", content=rng.choice([None, self.text()]),
                               total_ms=12.5)
            self.running.remove(job)
        return {job.channel_id}

    def watched(self) -> list[int]:
        return self.channels if self.late_read else self.channels[:3]

    def snapshot(self) -> dict[int, tuple]:
        return {c: (tuple(self.db.rows("SELECT * FROM messages WHERE channel_id = ? ORDER BY id", [c])),
                    chat.channel_version(self.db, c)) for c in self.channels}

    def check_pages(self) -> None:
        for channel_id in self.watched():
            for limit in LIMITS:
                assert chat.list_messages(self.db, channel_id, limit=limit) == chat.read_messages_uncached(
                    self.db, channel_id, limit
                ), (channel_id, limit)


@pytest.mark.parametrize("seed", [1, 2])
def test_cache_matches_duckdb_after_any_mix_of_writes(tmp_path, seed):
    path = str(tmp_path / "mix.duckdb")
    db = connect(path)
    run = Sequence(db, random.Random(seed))
    run.check_pages()
    steps = 300
    for number in range(steps):
        if number == steps // 2:
            run.late_read = True  # its first fill happens now, with history and open replies in it
        before = run.snapshot()
        touched = run.step()
        after = run.snapshot()
        for channel_id in run.channels:
            (rows_before, version_before), (rows_after, version_after) = before[channel_id], after[channel_id]
            if rows_after != rows_before:
                assert version_after != version_before, f"step {number}: channel {channel_id} changed silently"
            if touched is not None and channel_id not in touched:
                assert version_after == version_before, f"step {number}: channel {channel_id} bumped by another"
            if touched is None and rows_after == rows_before:
                assert version_after == version_before, f"step {number}: recover bumped untouched {channel_id}"
        run.check_pages()

    counts = db.rows("SELECT channel_id, count(*) FROM messages GROUP BY ALL ORDER BY ALL")
    assert max(count for _, count in counts) > 60  # deep enough to page past the cache
    pages = {c: chat.list_messages(db, c, limit=60) for c in run.channels}
    db.close()

    reopened = connect(path)
    for channel_id in run.channels:
        assert chat.list_messages(reopened, channel_id, limit=60) == pages[channel_id]
    reopened.close()


def test_live_page_tick_touches_no_duckdb(db):
    """What the chat page does every second (version check, cached list) opens no DuckDB cursor."""
    from core import chat

    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    chat.send_message(db, general, ann, "hello")
    chat.list_messages(db, general)  # first use fills the cache from DuckDB
    before = db.cursors_opened
    for _ in range(100):
        chat.channel_version(db, general)
        chat.list_messages(db, general)
    assert db.cursors_opened == before
    chat.send_message(db, general, ann, "again")  # a write does use DuckDB ...
    assert db.cursors_opened > before
    after_write = db.cursors_opened
    assert [m.content for m in chat.list_messages(db, general)] == ["again", "hello"]  # ... the read after it does not
    assert db.cursors_opened == after_write
