"""DuckDB file faults: a database killed young opens again with every committed row; damaged or foreign
files, a full or read-only disk give a readable error naming the file and what to do, never DuckDB's text alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from core import chat
from core.errors import ChatError, DatabaseDamaged, DatabaseLocked, StorageError
from core.store import connect, duck
from core.store.migrations import MIGRATIONS

CHILD = Path(__file__).with_name("young_child.py")
ALL_MIGRATIONS = [name for name, _ in MIGRATIONS]
READY_TIMEOUT = 30  # seconds for the child to reach its point on a busy machine


def _kill_at(path: Path, point: str, after: float = 0.0) -> list[str]:
    """Run the child until it says "ready" (or ``after`` s past its "go"), SIGKILL it; return what it printed."""
    child = subprocess.Popen([sys.executable, str(CHILD), str(path), point], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while (line := child.stdout.readline().strip()) not in ("ready", "go"):
            assert line or child.poll() is None, f"the child ended before {point}: {lines}"
            assert time.monotonic() < deadline, f"the child did not reach {point}"
            lines.append(line)
        time.sleep(after)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        lines += [line.strip() for line in child.stdout.read().splitlines()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return lines


def _reopened(path: Path, confirmed: int = 0) -> None:
    """The killed file opens, holds the whole schema and every confirmed send, and takes new writes."""
    db = connect(str(path))
    try:
        assert [name for (name,) in db.rows("SELECT name FROM migrations ORDER BY name")] == sorted(ALL_MIGRATIONS)
        contents = [content for (content,) in db.rows("SELECT content FROM messages ORDER BY id")]
        assert contents[:confirmed] == [f"message {i}" for i in range(confirmed)]
        user_id = chat.list_users(db)[0].id if chat.list_users(db) else chat.create_user(db, "Ann")
        channels = chat.list_channels(db)
        channel_id = channels[0].id if channels else chat.create_channel(db, "general", reply_policy="off")
        assert chat.send_message(db, channel_id, user_id, "after the kill")
    finally:
        db.close()
    again = connect(str(path))  # and once more after a clean close
    assert again.one("SELECT count(*) FROM messages WHERE content = 'after the kill'") == (1,)
    again.close()


POINTS = ["connected", "migrating:2", "migrated:1", "migrated:2", "migrated:3", f"migrated:{len(MIGRATIONS)}", "sent:3"]


@pytest.mark.parametrize("point", POINTS)
def test_a_database_killed_young_opens_again(tmp_path, point):
    path = tmp_path / "young.duckdb"
    printed = _kill_at(path, point)
    _reopened(path, confirmed=sum(line.startswith("sent ") for line in printed))


@pytest.mark.parametrize("after", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5])
def test_a_database_killed_at_any_moment_keeps_every_confirmed_send(tmp_path, after):
    """Killed a fixed time after it starts opening and sending: wherever that lands, nothing confirmed is lost."""
    path = tmp_path / "any.duckdb"
    printed = _kill_at(path, "running", after=after)
    _reopened(path, confirmed=sum(line.startswith("sent ") for line in printed))


def test_an_unreplayable_log_is_replayed_not_thrown_away(tmp_path):
    """The cause: DuckDB 1.5 cannot replay an ALTER TABLE on a table with a function default from its log.

    A raw DuckDB file in that state fails on every open; connect() replays the log attached to an
    in-memory database instead (where the lookup that fails has a default database) and keeps every row.
    """
    path = tmp_path / "raw.duckdb"
    script = (
        "import duckdb, os\n"
        f"c = duckdb.connect({str(path)!r})\n"
        "c.execute(\"CREATE SEQUENCE s\")\n"
        "c.execute(\"CREATE TABLE t (id BIGINT DEFAULT nextval('s'), x INTEGER)\")\n"
        "c.execute(\"INSERT INTO t (x) VALUES (1), (2)\")\n"
        "c.execute(\"ALTER TABLE t ADD COLUMN y INTEGER\")\n"
        "c.execute(\"INSERT INTO t (x, y) VALUES (3, 3)\")\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    with pytest.raises(duckdb.Error, match="Failure while replaying WAL"):
        duckdb.connect(str(path))  # DuckDB by itself cannot open it
    connect(str(path)).close()  # replays the log, then adds the app's tables beside t
    con = duckdb.connect(str(path))
    assert con.execute("SELECT id, x, y FROM t ORDER BY id").fetchall() == [(1, 1, None), (2, 2, None), (3, 3, 3)]
    con.execute("INSERT INTO t (x) VALUES (4)")
    assert con.execute("SELECT max(id) FROM t").fetchone() == (4,)  # the sequence carried on
    con.close()


def _flip_header(path: Path) -> None:
    with open(path, "r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 64)  # inside the header block: its checksum no longer matches


def _cut_in_half(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [_flip_header, _cut_in_half], ids=["checksum", "truncated"])
def test_a_damaged_file_is_a_plain_sentence_and_duckdbs_words_go_to_the_log(tmp_path, caplog, damage):
    path = tmp_path / "damaged.duckdb"
    db = connect(str(path))
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    db.write(lambda tx: tx.execute(  # enough rows to span many blocks, so half the file is missing some
        "INSERT INTO messages (channel_id, author_id, content, created_at, status) "
        "SELECT ?, ?, 'message ' || i || ' ' || repeat('x', 200), now(), 'complete' FROM range(3000) t(i)",
        [general, ann]))
    db.close()
    damage(path)
    size = os.path.getsize(path)
    with pytest.raises(DatabaseDamaged) as caught:
        db = connect(str(path))  # a cut file may open: reading what was cut off fails
        try:
            db.rows("SELECT max(length(content)) FROM messages")
        finally:
            db.close()
    said = str(caught.value)
    assert said.startswith(f"The database file {str(path)!r} is damaged: parts of it cannot be read.")
    assert "CHAT_DB" in said and "backup" in said
    for engine_word in ("Error", "checksum", "block", "location", "Corrupt"):
        assert engine_word not in said
    logged = [r.getMessage() for r in caplog.records if r.name == "core.store.duck"]
    assert any("damaged" in line and "Error" in line for line in logged), logged  # DuckDB's words, for whoever mends it
    assert os.path.getsize(path) == size  # never replaced or "repaired"


# a full disk -----------------------------------------------------------------
@pytest.fixture
def disk(tmp_path):
    """A 16 MB tmpfs: room for a small database and the app's reserve, quickly filled."""
    from faultfs import tmpfs

    with tmpfs(tmp_path / "disk", "16m") as folder:
        yield folder


LARGE = "y" * 20_000  # a message larger than the space a file's last page may still hold


def _contents(db, channel_id) -> list[str]:
    return [m.content for m in reversed(chat.list_messages(db, channel_id, limit=50))]


@pytest.mark.parametrize("reserve", ["app", "none"])
def test_writes_on_a_full_disk_fail_readably_and_work_again_when_space_returns(disk, reserve, monkeypatch):
    """Refused by the app's free-space reserve, or (reserve off, inserts only) by DuckDB's failed log write."""
    from faultfs import fill

    if reserve == "none":
        monkeypatch.setattr(duck, "DISK_RESERVE", 0)

    db = connect(str(disk / "chat.duckdb"))
    ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
    chat.send_message(db, quiet, ann, "before")
    ballast = fill(disk)
    for _ in range(3):
        with pytest.raises(StorageError) as caught:
            chat.send_message(db, quiet, ann, LARGE)
    said = str(caught.value)
    assert "chat.duckdb" in said and "the disk is full" in said and "Nothing was saved" in said
    assert "Error:" not in said  # DuckDB's own text is translated
    assert _contents(db, quiet) == ["before"]  # reading goes on
    ballast.unlink()
    chat.send_message(db, quiet, ann, "after")
    assert _contents(db, quiet) == ["before", "after"]
    db.close()
    again = connect(str(disk / "chat.duckdb"))
    assert _contents(again, quiet) == ["before", "after"] and [u.name for u in chat.list_users(again)] == ["Ann"]
    again.close()


def test_a_checkpoint_on_a_full_disk_stops_duckdb_and_the_app_reopens_it(disk):
    """DuckDB invalidates a database whose checkpoint failed; the app reopens the file once it can."""
    from faultfs import fill

    db = connect(str(disk / "chat.duckdb"))
    ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
    for i in range(20):
        chat.send_message(db, quiet, ann, f"message {i} " + "x" * 2000)  # in the log, not yet in the file
    ballast = fill(disk)
    with pytest.raises(StorageError) as caught:
        db.rows("CHECKPOINT")
    assert "the disk is full" in str(caught.value) and "reopens it" in str(caught.value)
    with pytest.raises(StorageError):  # reopened (the log replays in memory), but nothing fits on the disk
        chat.send_message(db, quiet, ann, LARGE)
    ballast.unlink()
    chat.send_message(db, quiet, ann, "after")  # reopened: the log replays every committed send
    contents = _contents(db, quiet)
    assert [c.split(" ", 2)[:2] for c in contents[:20]] == [["message", str(i)] for i in range(20)]
    assert contents[20:] == ["after"]
    db.close()


def test_replies_open_while_the_disk_was_full_end_within_a_sweep_once_space_returns(disk, fake_openai):
    """The running Responder's sweep (lease-based requeue) mends replies whose writes failed, without a restart."""
    from fake_openai import Script
    from faultfs import fill

    from core.ai import LEASE_BEATS, Responder
    from core.config import Settings

    lease = 2.0  # seconds: a sweep every lease / LEASE_BEATS
    sweep = lease / LEASE_BEATS
    words = [f"word{i} " for i in range(60)]
    for _ in range(3):  # the first attempts stream slowly, so the disk fills mid-reply; later ones are quick
        fake_openai.push(Script(chunks=words, chunk_delay=0.1))
    db = connect(str(disk / "chat.duckdb"))
    ann, busy = chat.create_user(db, "Ann"), chat.create_channel(db, "busy")
    settings = Settings(openai_api_key="test-key", openai_base_url=fake_openai.base_url, ai_workers=3,
                        ai_lease_seconds=lease)
    responder = Responder(db, settings).start()
    try:
        for i in range(3):
            chat.send_message(db, busy, ann, f"question {i} " + "q" * 3000)

        def replies():
            return [m for m in chat.read_messages_uncached(db, busy, limit=20) if m.is_ai]

        deadline = time.monotonic() + 20
        while sum(m.status == "streaming" and m.content != "" for m in replies()) < 3:
            assert time.monotonic() < deadline, f"replies never streamed: {[m.status for m in replies()]}"
            time.sleep(0.05)
        ballast = fill(disk)
        time.sleep(2 * lease)  # the streams' writes fail meanwhile; their leases run out
        ballast.unlink()
        back = time.monotonic()
        while any(m.status in ("pending", "streaming") for m in replies()):
            assert time.monotonic() - back < sweep + 2.0, f"replies still open: {[(m.status, m.error) for m in replies()]}"
            time.sleep(0.05)
        print(f"replies ended {time.monotonic() - back:.2f} s after space returned (a sweep every {sweep:.2f} s)")
        ended = replies()
        assert len(ended) == 3 and all(m.status in ("complete", "error") for m in ended)
        assert all(m.error is None or "disk is full" in m.error for m in ended)  # a closed one says why
        assert db.one("SELECT count(*) FROM ai_jobs WHERE state IN ('pending', 'running')") == (0,)
    finally:
        responder.stop(grace=0)
        db.close()


CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from core import chat, jobs, replies
from core.errors import StorageError
from core.store import connect, duck
from faultfs import fill
from pathlib import Path
duck.DISK_RESERVE = int(sys.argv[2])
db = connect(sys.argv[1])
ann, busy = chat.create_user(db, "Ann"), chat.create_channel(db, "busy")
chat.send_message(db, busy, ann, "hello")
job = jobs.claim_next_job(db)
replies.stream_reply(db, job.reply_id, "word ", job_id=job.id)
fill(Path(sys.argv[1]).parent)
for i in range(20):  # small writes: the first ones may still fit in the log's last page
    try:
        replies.stream_reply(db, job.reply_id, "word " * (i + 2), job_id=job.id)
    except StorageError:
        print("refused", flush=True)
print("alive", flush=True)
"""


def test_the_reserve_keeps_duckdb_from_aborting_on_a_half_written_commit(disk):
    """Why DISK_RESERVE exists: without it, DuckDB 1.5 aborts the process when a commit's log write fails half-way."""
    script = CRASH.format(root=str(Path(__file__).resolve().parent.parent))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    without = subprocess.run([sys.executable, "-c", script, str(disk / "a.duckdb"), "0"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert without.returncode == -signal.SIGABRT and "alive" not in without.stdout, without.stderr[-2000:]
    assert "FatalException" in without.stderr  # "terminate called after throwing an instance of ..."
    (disk / "ballast").unlink()
    kept = subprocess.run([sys.executable, "-c", script, str(disk / "b.duckdb"), str(duck.DISK_RESERVE)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert kept.returncode == 0 and kept.stdout.split() == ["refused"] * 20 + ["alive"], kept.stderr[-2000:]
