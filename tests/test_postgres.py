"""What only the Postgres backend does: its faults, retries, notifications and the read-only Tables attachment."""
from __future__ import annotations

import threading
import time

import duckdb
import pytest

from core import chat, tables
from core.errors import ChatError, DatabaseUnavailable, ValidationError
from core.store import connect
from core.store.pg import describe_url, translate


def test_placeholders_translate_outside_quotes_only():
    assert translate("SELECT ? , '?' , \"a?\" , x % 2 FROM t WHERE a = ?") == (
        "SELECT %s , '?' , \"a?\" , x %% 2 FROM t WHERE a = %s"
    )


def test_a_url_is_described_without_its_password():
    described = describe_url("postgresql://chat:s3cret-pass@db.example.com:6543/chatdb?sslmode=require")
    assert described == "chat@db.example.com:6543/chatdb" and "s3cret" not in described


def test_unreachable_at_start_is_a_readable_error_without_the_password(pg_server):
    url = f"postgresql://someone:hunter2@127.0.0.1:{pg_server.port + 1}/nowhere"  # nothing listens there
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(url)
    text = str(caught.value)
    assert "someone@127.0.0.1" in text and "/nowhere" in text and "unreachable" in text
    assert "hunter2" not in text


def test_a_unique_name_clash_between_processes_is_a_validation_error(pg_url):
    """Two processes create the same name at once: one wins, the other gets the readable error (no retry loop)."""
    first, second = connect(pg_url), connect(pg_url)
    try:
        barrier = threading.Barrier(2)
        results: list = []

        def create(db, name):
            barrier.wait()
            try:
                results.append(chat.create_channel(db, name))
            except ValidationError as error:
                results.append(error)

        threads = [threading.Thread(target=create, args=(db, name)) for db, name in ((first, "Deploys"), (second, "deploys"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(type(r).__name__ for r in results) == ["ValidationError", "int"]
        assert "already exists" in str(next(r for r in results if isinstance(r, ValidationError)))
        assert [c.name.lower() for c in chat.list_channels(first)] == ["deploys"]
    finally:
        first.close()
        second.close()


def test_a_deadlock_is_retried(pg_url):
    """Writers run in parallel on Postgres (DuckDB's are serialized), so two can deadlock: the loser runs again."""
    db = connect(pg_url)
    try:
        a, b = chat.create_user(db, "A"), chat.create_user(db, "B")
        barrier = threading.Barrier(2, timeout=10)
        tries = {"x": 0, "y": 0}

        def crosswise(name, first, second):
            def work(tx):
                tries[name] += 1
                tx.execute("UPDATE users SET name = name WHERE id = ?", [first])
                if tries[name] == 1:
                    barrier.wait()  # both hold their first row: the second UPDATEs lock each other
                tx.execute("UPDATE users SET name = name WHERE id = ?", [second])
            db.write(work)

        threads = [threading.Thread(target=crosswise, args=("x", a, b)), threading.Thread(target=crosswise, args=("y", b, a))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(tries.values()) == [1, 2]  # Postgres broke the deadlock; the loser ran again and committed
    finally:
        db.close()


def test_a_write_in_one_process_reaches_the_other_processes_cache(pg_url):
    a, b = connect(pg_url), connect(pg_url)
    try:
        assert b.listener_connected.wait(10)
        ann, general = chat.create_user(a, "Ann"), chat.create_channel(a, "general", reply_policy="off")
        assert [m.content for m in chat.list_messages(b, general)] == []  # b's cache now holds the empty channel
        seen = threading.Event()
        b.recent.subscribe(lambda channel_id, version: channel_id == general and seen.set())
        before = chat.channel_version(b, general)
        chat.send_message(a, general, ann, "hello from a")
        assert seen.wait(5), "b never heard of a's write"
        assert chat.channel_version(b, general) != before
        assert [m.content for m in chat.list_messages(b, general)] == ["hello from a"]
        assert [u.name for u in chat.list_users(b)] == ["Ann"]
    finally:
        a.close()
        b.close()


def test_restart_of_postgres_under_a_running_app(pg_server):
    """In-flight work fails readably while it is down, the app reconnects by itself, nothing committed is lost."""
    url = pg_server.create_database()
    db = connect(url)
    try:
        ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
        sent = [chat.send_message(db, general, ann, f"before {i}") for i in range(5)]
        assert db.listener_connected.wait(10)
        pg_server.stop("immediate")  # a crash: no goodbye to the clients
        try:
            with pytest.raises(DatabaseUnavailable, match="unreachable"):
                chat.send_message(db, general, ann, "while it is down")
            with pytest.raises(ChatError):
                chat.list_users(db)
        finally:
            pg_server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                sent.append(chat.send_message(db, general, ann, "after the restart"))
                break
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert db.listener_connected.wait(15), "the listener did not reconnect"
        contents = [m.content for m in reversed(chat.list_messages(db, general, limit=50))]
        assert contents == [f"before {i}" for i in range(5)] + ["after the restart"]
    finally:
        db.close()


def test_tables_read_postgres_through_a_read_only_attachment(pg_url):
    db = connect(pg_url)
    try:
        ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
        chat.send_message(db, general, ann, "counted")
        assert dict(tables.list_tables(db))["messages"] == 1
        assert tables.run_readonly_sql(db, "SELECT count(*) AS n FROM messages")["n"].tolist() == [1]
        with db.analytics() as cur:  # below the console's own checks: the attachment itself refuses writes
            with pytest.raises(duckdb.Error, match="read-only"):
                cur.execute("DELETE FROM messages")
        with pytest.raises(ValidationError):
            tables.run_readonly_sql(db, "SELECT * FROM postgres_query('pg', 'DELETE FROM messages RETURNING 1')")
        assert db.one("SELECT count(*) FROM messages") == (1,)
    finally:
        db.close()
