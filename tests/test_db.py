"""The one place the database is opened: real files, one transaction per write, a readable lock error."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from core import chat
from core.errors import ChatError, DatabaseLocked
from core.store import Database, connect

ROOT = Path(__file__).resolve().parent.parent


def test_connect_creates_and_reopens_a_file(tmp_path):
    path = tmp_path / "chat.duckdb"
    db = connect(str(path))
    assert isinstance(db, Database) and path.exists() and db.path == str(path)
    user_id = chat.create_user(db, "Ann")
    db.close()
    again = connect(str(path))
    assert chat.get_user(again, user_id).name == "Ann"
    again.close()


def test_memory_database_works():
    db = connect(":memory:")
    channel_id = chat.create_channel(db, "general")
    assert chat.get_channel(db, channel_id).name == "general"
    db.close()


def test_external_access_is_off(db):
    """The SQL console's DuckDB cannot read files outside the database, on either backend."""
    with pytest.raises(duckdb.Error, match="(?i)external|disabled|permission"):
        with db.analytics() as cur:
            cur.execute("SELECT * FROM read_csv('/etc/hostname')")


def test_clock_is_passed_in(tmp_path):
    moment = datetime(2030, 1, 2, 3, 4, 5)
    db = connect(str(tmp_path / "clock.duckdb"), clock=lambda: moment)
    user_id = chat.create_user(db, "Ann")
    assert chat.get_user(db, user_id).created_at == moment
    db.close()


def test_write_commits_then_runs_after_commit_actions(db):
    seen = []

    def work(tx):
        tx.execute("INSERT INTO users (name, name_key, created_at) VALUES ('Ann', 'ann', ?)", [db.clock()])
        tx.on_commit(lambda: seen.append(db.one("SELECT count(*) FROM users")[0]))
        assert seen == []  # not before the commit
        return tx.one("SELECT count(*) FROM users")[0]

    assert db.write(work) == 1
    assert seen == [1]  # the action saw the committed row


def test_write_rolls_back_on_error_and_skips_actions(db):
    seen = []

    def work(tx):
        tx.execute("INSERT INTO users (name, name_key, created_at) VALUES ('Ann', 'ann', ?)", [db.clock()])
        tx.on_commit(lambda: seen.append("ran"))
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        db.write(work)
    assert db.one("SELECT count(*) FROM users") == (0,)
    assert seen == []


def test_write_retries_a_conflict(duck_db):
    db = duck_db
    user_id = chat.create_user(db, "Ann")
    attempts = []
    with db.cursor() as other:
        other.begin()
        other.execute("UPDATE users SET name = 'Other' WHERE id = ?", [user_id])

        def work(tx):
            attempts.append(1)
            try:
                tx.execute("UPDATE users SET name = 'Writer' WHERE id = ?", [user_id])
            except duckdb.TransactionException:
                other.commit()  # the competing transaction lands; the next attempt gets through
                raise
            return len(attempts)

        assert db.write(work) == 2
    assert chat.get_user(db, user_id).name == "Writer"


def test_cursors_work_from_many_threads(db):
    chat.create_user(db, "Ann")
    errors, counts = [], []

    def read():
        try:
            for _ in range(50):
                counts.append(db.one("SELECT count(*) FROM users")[0])
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and counts == [1] * 400


def test_closed_database_says_so(tmp_path):
    db = connect(str(tmp_path / "closed.duckdb"))
    db.close()
    db.close()  # twice is harmless
    with pytest.raises(ChatError, match="closed"):
        db.rows("SELECT 1")
    with pytest.raises(ChatError, match="closed"):
        chat.create_user(db, "Ann")


def test_signal_wakes_a_waiting_worker(db):
    woke = threading.Event()

    def worker():
        db.wait_for_jobs(timeout=30)
        woke.set()

    thread = threading.Thread(target=worker)
    thread.start()
    while not woke.is_set():  # a signal sent before the worker waits is lost, so keep signalling
        db.signal_jobs()
        woke.wait(0.01)
    thread.join()
    assert woke.is_set()


def test_not_a_database_file_is_a_readable_error(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(ChatError) as caught:
        connect(str(path))
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, DatabaseLocked)


def test_second_process_gets_database_locked(duck_db):
    db = duck_db
    script = (
        "import sys\n"
        "from core.store import connect\n"
        "try:\n"
        "    connect(sys.argv[1])\n"
        "    print('OPENED')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, db.path], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kind, message = done.stdout.strip().split("\n", 1)
    assert kind == "DatabaseLocked"
    assert "Another Channel Chat instance" in message
    assert db.path in message and "CHAT_DB" in message
    assert "Traceback" not in done.stdout + done.stderr
    assert issubclass(DatabaseLocked, ChatError)
    chat.create_user(db, "Still mine")  # the first process is unaffected


def test_a_signal_between_the_look_and_the_wait_is_not_lost(db):
    mark = db.jobs_mark()  # the dispatcher reads this, then looks for a job and finds none ...
    db.signal_jobs()  # ... while a send commits and signals ...
    started = time.monotonic()
    db.wait_for_jobs(timeout=30, since=mark)  # ... so the wait returns at once instead of sleeping it out
    assert time.monotonic() - started < 1.0
