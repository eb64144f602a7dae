"""The SQL console's bounds: queries that would take the app down end within the cap, within the memory budget,
while the chat keeps storing and answering messages (core/console/, through core.tables.run_readonly_sql)."""
from __future__ import annotations

import os
import resource
import threading
import time

import pytest

from core import chat, console
from core import tables as t
from core.ai import Responder
from core.config import Settings
from core.console import snapshot
from core.errors import ValidationError
from fake_openai import Script

CAP = 3.0  # seconds: the tests' time cap (the app's default is 5 s)
BUDGET_MB = 256  # the app's default memory budget
SLACK = 1.0  # "stopped within cap + 1 s"
RUNAWAY = {
    "one huge list": ("SELECT list(range(200000000))", "memory"),
    "one huge string": ("SELECT repeat('x', 2000000000)", "memory"),
    "cross join with aggregation": ("SELECT count(*), sum(a.range * b.range) FROM range(1000000) a, range(1000000) b", "time"),
    "recursion without end": ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "time"),
    # Interrupting DuckDB in the app's process let this one run 3.7 s past its cap and grow to 1.15 GB.
    "list finalised in one piece": ("SELECT list(range(10000000))", None),
}


def _own_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def baseline_mb(db):
    """The console process's own peak for a trivial query: the budget comes on top of it."""
    return t.run_readonly_sql(db, "SELECT 1 AS one").attrs["peak_mb"]


@pytest.mark.parametrize("name", list(RUNAWAY))
def test_runaway_query_stops_within_cap_and_budget(db, baseline_mb, name):
    sql, kind = RUNAWAY[name]
    app_before = _own_peak_mb()
    started = time.monotonic()
    with pytest.raises(t.QueryStopped) as stopped:
        t.run_readonly_sql(db, sql, timeout_s=CAP, memory_mb=BUDGET_MB)
    elapsed = time.monotonic() - started
    error = stopped.value
    assert elapsed <= CAP + SLACK, f"{name}: stopped after {elapsed:.2f} s"
    assert error.peak_mb <= baseline_mb + BUDGET_MB, f"{name}: the console process peaked at {error.peak_mb:.0f} MB"
    assert _own_peak_mb() - app_before < 50, "the app's own process grew"
    if kind is not None:
        assert error.kind == kind
    assert str(error) in (
        f"The query ran longer than {CAP:g} s and was stopped; narrow it down (WHERE, LIMIT).",
        f"The query needed more than the console's {BUDGET_MB} MB of memory and was stopped; "
        "narrow it down (WHERE, LIMIT, fewer or shorter columns).",
    )


def test_chat_stores_and_answers_while_a_console_query_runs(db, fake_openai):
    fake_openai.default = Script(text="Still here.")
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    responder = Responder(db, Settings(openai_api_key="test-key", openai_base_url=fake_openai.base_url)).start()
    outcome: dict = {}

    def console_query():
        try:
            t.run_readonly_sql(db, RUNAWAY["cross join with aggregation"][0], timeout_s=CAP, memory_mb=BUDGET_MB)
        except t.QueryStopped as error:
            outcome["stopped"] = (time.monotonic(), error.kind)

    try:
        worker = threading.Thread(target=console_query)
        worker.start()
        time.sleep(1.0)  # the console process is busy by now
        sent = chat.send_message(db, general, ann, "Anyone there?")
        deadline = time.monotonic() + 10
        while (reply := chat.list_messages(db, general)[0]).status != "complete":
            assert time.monotonic() < deadline, f"no reply: {reply}"
            time.sleep(0.02)
        answered = time.monotonic()
        worker.join()
    finally:
        responder.stop(grace=0)
    assert chat.get_message(db, sent).content == "Anyone there?"
    assert reply.content == "Still here."
    assert answered < outcome["stopped"][0] and outcome["stopped"][1] == "time"  # answered while the query ran


def test_console_reads_a_snapshot_that_follows_the_database(duck_db):
    db = duck_db
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    chat.send_message(db, general, ann, "first")
    with console.duckdb_source(db, max_age=0) as (source, _):
        answer = console.run(source, "SELECT count(*) AS n FROM messages", max_rows=10, timeout_s=CAP, memory_mb=BUDGET_MB)
    chat.send_message(db, general, ann, "second")  # lands in the write-ahead log
    with console.duckdb_source(db, max_age=0) as (source, _):
        fresh = console.run(source, "SELECT count(*) AS n FROM messages", max_rows=10, timeout_s=CAP, memory_mb=BUDGET_MB)
    import pyarrow as pa

    counts = [pa.ipc.open_stream(a.ipc).read_all().column("n")[0].as_py() for a in (answer, fresh)]
    assert counts == [1, 2]


def test_retired_snapshots_are_deleted(duck_db):
    db = duck_db
    for _ in range(3):
        with console.duckdb_source(db, max_age=0):
            pass
    folder = snapshot.scratch_folder()
    mine = [name for name in os.listdir(folder) if name.startswith("snapshot-")]
    current = os.path.basename(snapshot._snapshots[os.path.abspath(db.path)].path)
    assert current in mine and len([n for n in mine if n == current]) == 1
    assert not [n for n in os.listdir(folder) if n.startswith("spill-")]  # every query's spill folder is gone


def _console_children() -> list[int]:
    """Pids of this process's running console children (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and command.endswith(b"core/console/child.py\0"):
            pids.append(int(entry))
    return pids


def test_console_process_gets_no_secrets(db, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    monkeypatch.setenv("CHAT_DB", "postgresql://app:db-password@db.example/chat")
    worker = threading.Thread(target=lambda: pytest.raises(t.QueryStopped, t.run_readonly_sql, db,
                                                           RUNAWAY["recursion without end"][0], timeout_s=CAP))
    worker.start()
    deadline = time.monotonic() + CAP
    while not (children := _console_children()):
        assert time.monotonic() < deadline, "no console process seen"
        time.sleep(0.01)
    with open(f"/proc/{children[0]}/environ", "rb") as environ:
        names = {item.split(b"=", 1)[0] for item in environ.read().split(b"\0") if item}
    worker.join()
    assert names and not names & {b"OPENAI_API_KEY", b"CHAT_DB"}


def test_console_on_postgres_sees_only_the_apps_schema(pg_url):
    """A database the app shares (Supabase's auth.users): the console and the Tables page reach only its schema."""
    import duckdb
    import psycopg

    from core.store import connect
    from core.store.pg import split_password

    dsn, password = split_password(pg_url)
    with psycopg.connect(dsn, autocommit=True, **({"password": password} if password else {})) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id BIGINT, email VARCHAR, encrypted_password VARCHAR)")
        conn.execute("INSERT INTO auth.users VALUES (1, 'ann@example.com', 'bcrypt-hash')")
    db = connect(pg_url)
    try:
        chat.create_user(db, "Ann")
        assert t.run_readonly_sql(db, "SELECT name FROM users")["name"].tolist() == ["Ann"]  # its own, as before
        for sql in ("SELECT * FROM pg.auth.users", "SELECT * FROM auth.users"):
            with pytest.raises(ValidationError) as refused:
                t.run_readonly_sql(db, sql)
            assert "bcrypt-hash" not in str(refused.value)
        schemas = t.run_readonly_sql(db, "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE database_name = 'pg'")
        assert schemas["schema_name"].tolist() == ["public"]
        with db.analytics() as cur:  # the Tables page's connection
            assert cur.execute("SELECT count(*) FROM users").fetchone() == (1,)
            with pytest.raises(duckdb.CatalogException):
                cur.execute("SELECT * FROM pg.auth.users")
    finally:
        db.close()


def test_console_on_postgres_runs_as_the_read_only_role(pg_url):
    """CONSOLE_ROLE: console queries take that role, so they read what it was granted and nothing more."""
    import uuid

    import psycopg

    from core.config import load_settings
    from core.store import connect
    from core.store.pg import split_password

    role = f"chat_reader_{uuid.uuid4().hex[:8]}"  # roles belong to the whole server, which the tests share
    dsn, password = split_password(pg_url)
    with psycopg.connect(dsn, autocommit=True, **({"password": password} if password else {})) as conn:
        for statement in (f"CREATE ROLE {role} NOLOGIN", f"GRANT USAGE ON SCHEMA public TO {role}",
                          f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
                          f"REVOKE SELECT ON identities FROM {role}", f"GRANT {role} TO current_user"):
            conn.execute(statement)
    db = connect(pg_url)
    try:
        chat.create_user(db, "Ann")
        assert t.run_readonly_sql(db, "SELECT name FROM users", role=role)["name"].tolist() == ["Ann"]
        with pytest.raises(ValidationError, match="(?i)permission denied"):
            t.run_readonly_sql(db, "SELECT * FROM identities", role=role)
        assert t.run_readonly_sql(db, "SELECT count(*) AS n FROM identities")["n"].tolist() == [0]  # the app's role
    finally:
        db.close()
        with psycopg.connect(dsn, autocommit=True, **({"password": password} if password else {})) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert load_settings({"CONSOLE_ROLE": role}).console_role == role
    for bad in ("Reader", "chat reader", "x -c default_transaction_read_only=off"):
        with pytest.raises(ValidationError, match="CONSOLE_ROLE must be a plain role name"):
            load_settings({"CONSOLE_ROLE": bad})
