"""The change feed on a real database: every committed change reaches every listener once, in order."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from core import chat, jobs, replies
from core.errors import ValidationError
from core.feed import REREAD, Change, ChangeFeed, feed_of
from core.recent import DIRECTORY

WAIT = 5.0  # seconds a test waits for a change that must come


def collect(subscription, until, timeout: float = WAIT) -> list[Change]:
    """Changes taken from ``subscription`` until ``until(changes)`` holds (or the time is up)."""
    changes: list[Change] = []
    while not until(changes):
        batch = subscription.wait(timeout)
        if not batch:
            break
        changes.extend(batch)
    return changes


def by_topic(changes: list[Change]) -> dict[int, list[int]]:
    topics: dict[int, list[int]] = defaultdict(list)
    for change in changes:
        topics[change.topic].append(change.version)
    return dict(topics)


def test_each_committed_change_reaches_every_listener_once_in_order(db):
    ann = chat.create_user(db, "Ann")
    feed = feed_of(db)
    bumps: list[tuple[int, int]] = []  # ground truth: every bump db.recent makes, as it makes it
    db.recent.subscribe(lambda topic, version: bumps.append((topic, version)))
    everything, also_everything = feed.subscribe(), feed.subscribe()
    first = chat.create_channel(db, "first", reply_policy="off")
    second = chat.create_channel(db, "second", reply_policy="every")
    only_first = feed.subscribe([first])

    sends = 40
    def writer(channel: int, offset: int) -> None:
        for i in range(sends // 4):
            chat.send_message(db, channel, ann, f"message {offset + i}")

    threads = [threading.Thread(target=writer, args=(channel, n * 100))
               for n, channel in enumerate([first, second, first, second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = by_topic([Change(topic, version) for topic, version in bumps])
    assert len(expected[first]) >= sends // 2 and len(expected[second]) >= sends // 2  # a commit bumps at least once
    assert len(expected[DIRECTORY]) == 2  # the two channels created while listening
    total = sum(map(len, expected.values()))
    for subscription in (everything, also_everything):
        got = collect(subscription, lambda changes: len(changes) >= total)
        assert REREAD not in got
        assert by_topic(got) == expected  # each change once, per topic in commit order, none lost
    got = collect(only_first, lambda changes: len(changes) >= len(expected[first]))
    assert by_topic(got) == {first: expected[first]}
    assert expected[first][-1] == db.recent.version(first)
    assert feed.current(first) == feed.stamp(db.recent.version(first))


def test_a_failed_write_delivers_nothing(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "c", reply_policy="off")
    subscription = feed_of(db).subscribe()
    with pytest.raises(ValidationError):
        chat.send_message(db, channel, ann, "   ")
    with pytest.raises(ValidationError):
        chat.create_channel(db, "C")  # a duplicate name: the transaction is rolled back
    assert subscription.wait(0.2) == []
    chat.send_message(db, channel, ann, "hello")
    assert [change.topic for change in subscription.wait(WAIT)] == [channel]


def test_a_listener_that_falls_behind_is_told_to_reread_and_then_follows_again(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "busy", reply_policy="off")
    feed = feed_of(db)
    slow, keeping_up = feed.subscribe(limit=5), feed.subscribe()
    for i in range(12):
        chat.send_message(db, channel, ann, f"m{i}")
    assert feed.settle()
    assert slow.take() == [REREAD]  # not silently dropped: told that it missed changes
    assert len(keeping_up.take()) == 12  # the others lost nothing
    assert feed.current(channel) == feed.stamp(db.recent.version(channel))  # what a re-read goes by

    chat.send_message(db, channel, ann, "after")
    assert slow.wait(WAIT) == [Change(channel, db.recent.version(channel))]


def test_wake_is_called_when_news_arrives_and_a_failing_listener_is_dropped(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "c", reply_policy="off")
    feed = feed_of(db)
    woken = []
    quiet = feed.subscribe(wake=lambda: woken.append(1))

    def broken() -> None:
        raise RuntimeError("event loop is closed")

    doomed = feed.subscribe(wake=broken)
    assert feed.listeners == 2
    chat.send_message(db, channel, ann, "one")
    chat.send_message(db, channel, ann, "two")
    assert feed.settle()
    assert woken == [1]  # woken once: it has unread news until it takes them
    assert len(quiet.take()) == 2
    chat.send_message(db, channel, ann, "three")
    assert feed.settle()
    assert woken == [1, 1] and len(quiet.take()) == 1
    assert doomed.closed and feed.listeners == 1  # the commits went through; the broken listener is gone


def test_a_slow_wake_up_never_holds_a_writer(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "c", reply_policy="off")
    feed = feed_of(db)
    stuck, let_go = threading.Event(), threading.Event()

    def slow_wake() -> None:  # a listener that takes its time (the contract says quick; this one is not)
        stuck.set()
        let_go.wait(WAIT)

    feed.subscribe(wake=slow_wake)
    first = threading.Thread(target=chat.send_message, args=(db, channel, ann, "wakes the slow one"))
    first.start()
    try:
        assert stuck.wait(WAIT)  # the slow wake-up is running now
        first.join(1.0)
        assert not first.is_alive()  # its writer returned without waiting for it
        started = time.monotonic()
        chat.send_message(db, channel, ann, "the next write")  # had the fan-out held the write lock, this would wait
        assert time.monotonic() - started < 1.0
    finally:
        let_go.set()
        first.join(WAIT)
    assert feed.settle()


def test_a_closed_subscription_hears_nothing_more(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "c", reply_policy="off")
    subscription = feed_of(db).subscribe([channel])
    subscription.close()
    chat.send_message(db, channel, ann, "hello")
    assert feed_of(db).settle()
    assert subscription.take() == [] and feed_of(db).listeners == 0


def test_a_streaming_reply_is_delivered_write_by_write(db):
    ann = chat.create_user(db, "Ann")
    channel = chat.create_channel(db, "ai", reply_policy="every")
    feed = feed_of(db)
    subscription = feed.subscribe([channel])
    chat.send_message(db, channel, ann, "hello @ai")
    job = jobs.claim_next_job(db)
    assert feed.settle() and len(subscription.take()) >= 1  # the message and its pending reply
    for text in ("Hel", "Hello", "Hello there"):
        assert replies.stream_reply(db, job.reply_id, text, job.id)
        assert feed.settle() and len(subscription.take()) == 1  # each stored piece of the growing reply is one push
    replies.finish_reply(db, job, "Hello there!")
    assert feed.settle() and len(subscription.take()) == 1


def test_stamps_tell_processes_apart(db, tmp_path):
    from core.store import connect

    other = connect(str(tmp_path / "other.duckdb"))
    try:
        mine, theirs = feed_of(db), feed_of(other)
        assert mine is feed_of(db) and mine is not theirs
        assert mine.stamp(3) == mine.stamp(3) and mine.stamp(3) != theirs.stamp(3)  # versions restart with a process
    finally:
        other.close()


def test_feed_stops_listening_when_closed(db):
    feed = ChangeFeed(db.recent)
    subscription = feed.subscribe()
    feed.close()
    chat.create_user(db, "Ann")
    assert subscription.closed and subscription.take() == []


def test_a_lost_listener_connection_tells_everyone_to_reread(db):
    channel = chat.create_channel(db, "c", reply_policy="off")
    feed = feed_of(db)
    subscription = feed.subscribe([channel])
    before = feed.current(channel)
    db.recent.invalidate_all()  # what a Postgres backend does when its LISTEN connection was lost
    assert subscription.wait(WAIT) == [REREAD]
    assert feed.current(channel) != before  # a page that re-reads by stamp sees that it must redraw


def test_a_commit_in_another_replica_reaches_this_replicas_listeners(pg_url):
    from core.store import connect

    here, there = connect(pg_url), connect(pg_url)  # two app processes on one Postgres
    try:
        ann = chat.create_user(there, "Ann")
        channel = chat.create_channel(there, "c", reply_policy="off")
        subscription = feed_of(here).subscribe([channel])
        chat.send_message(there, channel, ann, "from the other replica")
        changes = subscription.wait(WAIT)
        assert [change.topic for change in changes] == [channel]
        assert chat.list_messages(here, channel)[0].content == "from the other replica"
    finally:
        here.close()
        there.close()
