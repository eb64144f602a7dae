"""core.tables on real DuckDB files: browse, filters, sort, paging, overview, exports and the read-only console."""
from __future__ import annotations

import io
import time
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql as pg_sql
from clock import Clock

from core import chat, jobs, replies, usage
from core import tables as t
from core.errors import NotFound, ValidationError
from core.store import connect
from core.store.quoting import identifier, literal
from core.tables import access
from core.tables.browser import _order, _where
from core.tables.catalog import table_names

START = datetime(2024, 3, 1, 9, 0)
APP_TABLES = {"ai_jobs", "ai_usage", "attachment_blobs", "attachments", "channels", "embedding_jobs", "identities",
              "message_vectors", "messages", "migrations", "renames", "search_state", "users", "message_revisions",
              "reactions", "message_acts", "memberships", "membership_log"}


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def sdb(tmp_path, clock):
    """A database with two channels, two users, AI replies that finished, failed and wait."""
    db = connect(str(tmp_path / "seeded.duckdb"), clock=clock)
    ann, bob = chat.create_user(db, "Ann"), chat.create_user(db, "Bob")
    general = chat.create_channel(db, "general")
    quiet = chat.create_channel(db, "quiet", reply_policy="off")
    clock.now = START
    chat.send_message(db, general, ann, "Hello World")  # day 1, AI reply finishes
    job = jobs.claim_next_job(db)
    usage.record(db, usage.Use(10, 3, False), user_id=job.requested_by, reply_id=job.reply_id, job_id=job.id)
    replies.finish_reply(db, job, "Hi Ann", prompt_tokens=10, completion_tokens=3, ttft_ms=100.0, total_ms=400.0)
    clock.now = START + timedelta(days=1)
    chat.send_message(db, general, bob, "second day question")  # day 2, AI reply fails
    job = jobs.claim_next_job(db)
    replies.fail_reply(db, job, "The AI service is down (HTTP 503).", total_ms=50.0)
    clock.now = START + timedelta(days=1, hours=2)
    chat.send_message(db, general, ann, "third, still waiting")  # AI reply pending
    chat.send_message(db, quiet, bob, "a QUIET note")  # no AI here
    db.ids = {"ann": ann, "bob": bob, "general": general, "quiet": quiet}
    yield db
    db.close()


def snapshot(db) -> dict:
    """Row count and content hash of every table, sequence positions and settings: what a write would change."""
    state = {}
    for name in table_names(db):
        state[name] = db.one(
            f"SELECT count(*), md5(coalesce(string_agg(x::VARCHAR, '|' ORDER BY x::VARCHAR), '')) FROM {identifier(name)} x"
        )
    state["sequences"] = db.rows("SELECT sequence_name, last_value FROM duckdb_sequences() ORDER BY 1")
    state["settings"] = db.rows("SELECT name, value FROM duckdb_settings() ORDER BY 1")
    state["tables"] = db.rows("SELECT table_name, sql FROM duckdb_tables() ORDER BY 1")
    return state


# catalog ---------------------------------------------------------------------
def test_list_tables_counts_every_table(sdb):
    counts = dict(t.list_tables(sdb))
    assert set(counts) == APP_TABLES
    assert counts["messages"] == 7 and counts["users"] == 2 and counts["channels"] == 2 and counts["ai_jobs"] == 3


def test_table_columns_come_from_the_catalog(sdb):
    names = [c.name for c in t.table_columns(sdb, "users")]
    assert names == ["id", "name", "name_key", "created_at", "name_skeleton"]
    with pytest.raises(NotFound, match="no table named"):
        t.table_columns(sdb, 'users"; DROP TABLE users; --')
    assert "users" in dict(t.list_tables(sdb))


def test_messages_browse_with_channel_and_author_names(sdb):
    frame, total = t.browse(sdb, "messages")
    assert total == 7
    assert {"channel", "author", "content", "status", "ttft_ms"} <= set(frame.columns)
    assert list(frame["id"]) == sorted(frame["id"], reverse=True)  # newest first by default
    first = frame.set_index("id").loc[frame["id"].min()]
    assert (first["channel"], first["author"], first["content"]) == ("general", "Ann", "Hello World")
    assert set(frame.loc[frame["author_id"].isna(), "author"]) == {"AI"}
    assert frame["author_id"].dtype == "Int64"  # ids stay whole numbers even with NULLs


def test_every_table_browses(sdb):
    for name, rows in t.list_tables(sdb):
        frame, total = t.browse(sdb, name, page_size=25)
        assert total == rows and len(frame) == min(rows, 25)


# filters, sort, paging --------------------------------------------------------
def ids(frame: pd.DataFrame) -> list[int]:
    return [int(i) for i in frame["id"]]


def test_filters_narrow_the_rows(sdb):
    ann, general, quiet = sdb.ids["ann"], sdb.ids["general"], sdb.ids["quiet"]
    assert t.browse(sdb, "messages", t.Filters(channel_id=quiet))[1] == 1
    assert t.browse(sdb, "messages", t.Filters(channel_id=general))[1] == 6
    frame, total = t.browse(sdb, "messages", t.Filters(author_id=ann))
    assert total == 2 and set(frame["author"]) == {"Ann"}
    frame, total = t.browse(sdb, "messages", t.Filters(author_id=t.AI_AUTHOR))
    assert total == 3 and frame["author_id"].isna().all()
    frame, total = t.browse(sdb, "messages", t.Filters(status="error"))
    assert total == 1 and frame["error"].iloc[0] == "The AI service is down (HTTP 503)."
    day2 = START + timedelta(days=1)
    assert t.browse(sdb, "messages", t.Filters(since=day2))[1] == 5
    assert t.browse(sdb, "messages", t.Filters(until=day2))[1] == 2
    assert t.browse(sdb, "messages", t.Filters(text="quiet"))[1] == 1  # case-insensitive
    assert t.browse(sdb, "messages", t.Filters(text="bob"))[1] == 2  # author names are text too
    both = t.Filters(channel_id=general, author_id=ann, since=day2)
    frame, total = t.browse(sdb, "messages", both)
    assert total == 1 and frame["content"].iloc[0] == "third, still waiting"
    assert t.count_rows(sdb, "messages", both) == 1


def test_filters_apply_only_where_the_table_has_the_column(sdb):
    assert t.filter_support(sdb, "messages") == {"channel_id", "author_id", "status", "since", "until", "text"}
    assert t.filter_support(sdb, "ai_jobs") == {"channel_id", "status", "since", "until", "text"}
    assert t.filter_support(sdb, "migrations") == {"text"}
    assert t.browse(sdb, "users", t.Filters(channel_id=99, status="x"))[1] == 2  # no such columns: ignored
    assert t.browse(sdb, "ai_jobs", t.Filters(status="done"))[1] == 2  # ai_jobs.state
    assert t.status_values(sdb, "messages") == ["complete", "error", "pending"]
    assert t.status_values(sdb, "ai_jobs") == ["done", "pending"]
    assert t.status_values(sdb, "users") == []


def test_text_filter_is_a_bound_value_not_sql(sdb):
    assert t.browse(sdb, "messages", t.Filters(text="'; DROP TABLE users; --"))[1] == 0
    assert t.browse(sdb, "messages", t.Filters(text="%"))[1] == 0  # no LIKE wildcards either
    assert dict(t.list_tables(sdb))["users"] == 2


def test_sort_by_catalog_column_and_direction(sdb):
    up = t.browse(sdb, "messages", sort=t.Sort("content", descending=False))[0]
    assert list(up["content"].dropna()) == sorted(up["content"].dropna())
    down = t.browse(sdb, "users", sort=t.Sort("name", descending=True))[0]
    assert list(down["name"]) == ["Bob", "Ann"]
    by_author = t.browse(sdb, "messages", sort=t.Sort("author", descending=False))[0]  # a joined name
    assert list(by_author["author"]) == ["AI"] * 3 + ["Ann"] * 2 + ["Bob"] * 2
    assert ids(by_author)[:3] == [2, 4, 6]  # ties broken by id, in the same direction
    with pytest.raises(ValidationError, match="Cannot sort by 'nope'"):
        t.browse(sdb, "messages", sort=t.Sort("nope"))
    with pytest.raises(ValidationError, match="Cannot sort by"):
        t.browse(sdb, "messages", sort=t.Sort("id; DROP TABLE users"))


def test_narrowing_the_bare_table_first_gives_the_same_rows_as_the_joined_view(sdb):
    """Without text search, messages are filtered and paged before names are joined: same answer, less work."""
    for filters in (t.Filters(), t.Filters(channel_id=sdb.ids["general"]), t.Filters(author_id=t.AI_AUTHOR)):
        for sort in (t.Sort("id"), t.Sort("created_at", descending=False), t.Sort("status")):
            fast, total = t.browse(sdb, "messages", filters, sort, page=1, page_size=25)
            where = _where(t.browse_columns(sdb, "messages"), filters)
            joined = sdb.rows(
                f"SELECT id FROM ({t.message_view()}) s{where[0]} ORDER BY {_order(t.browse_columns(sdb, 'messages'), sort)}",
                where[1],
            )
            assert ids(fast) == [row[0] for row in joined] and total == len(joined)


def test_paging_in_sql(db):
    user, channel = chat.create_user(db, "Ann"), chat.create_channel(db, "bulk", reply_policy="off")
    db.write(lambda tx: tx.execute(
        "INSERT INTO messages (channel_id, author_id, content, created_at) "
        "SELECT ?, ?, 'm' || i, TIMESTAMP '2024-01-01' + i * INTERVAL '1 minute' FROM generate_series(0, 119) r(i)",
        [channel, user],
    ))
    pages = [t.browse(db, "messages", page=n, page_size=25) for n in range(1, 6)]
    assert [len(frame) for frame, _ in pages] == [25, 25, 25, 25, 20]
    assert {total for _, total in pages} == {120}
    seen = [i for frame, _ in pages for i in ids(frame)]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 120
    assert len(t.browse(db, "messages", page=9, page_size=25)[0]) == 0
    assert t.page_count(120, 25) == 5 and t.page_count(0, 25) == 1
    with pytest.raises(ValidationError, match="Page size"):
        t.browse(db, "messages", page_size=7)
    with pytest.raises(ValidationError, match="Page must"):
        t.browse(db, "messages", page=0)


def test_long_text_is_cut_in_the_browser_but_exported_whole(sdb):
    long = "x" * (t.TEXT_PREVIEW_CHARS * 3)
    chat.send_message(sdb, sdb.ids["quiet"], sdb.ids["ann"], long)
    shown = t.browse(sdb, "messages", t.Filters(text="xxx"))[0]
    assert len(shown["content"].iloc[0]) == t.TEXT_PREVIEW_CHARS
    exported, capped = t.export_frame(sdb, "messages", t.Filters(text="xxx"))
    assert exported["content"].iloc[0] == long and not capped


# export ----------------------------------------------------------------------
def test_exports_parse_back_to_the_same_rows(sdb):
    filters = t.Filters(channel_id=sdb.ids["general"])
    frame, capped = t.export_frame(sdb, "messages", filters)
    assert len(frame) == 6 and not capped
    from_csv = pd.read_csv(io.BytesIO(t.export_csv(sdb, "messages", filters)))
    assert list(from_csv["id"]) == ids(frame)
    assert list(from_csv["content"].fillna("")) == list(frame["content"])  # CSV writes '' and NULL alike
    from_parquet = pq.read_table(io.BytesIO(t.export_parquet(sdb, "messages", filters))).to_pandas()
    pd.testing.assert_frame_equal(from_parquet, frame, check_dtype=False)


def test_export_is_capped(sdb):
    frame, capped = t.export_frame(sdb, "messages", limit=3)
    assert capped and len(frame) == 3
    assert t.EXPORT_MAX_ROWS == 100_000


# overview --------------------------------------------------------------------
def test_messages_per_channel_over_time(sdb):
    daily = t.messages_over_time(sdb, "day")
    assert list(daily.columns) == ["general", "quiet"]
    day1, day2 = datetime(2024, 3, 1), datetime(2024, 3, 2)
    assert daily.loc[day1, "general"] == 2 and daily.loc[day2, "general"] == 4
    assert daily.loc[day2, "quiet"] == 1 and daily.loc[day1, "quiet"] == 0
    hourly = t.messages_over_time(sdb, "hour", since=START + timedelta(days=1, hours=1))
    assert hourly.to_dict("index") == {START + timedelta(days=1, hours=2): {"general": 2, "quiet": 1}}
    with pytest.raises(ValidationError, match="Bucket"):
        t.messages_over_time(sdb, "minute")


def test_ai_timings_tokens_and_error_rate(sdb):
    timings = t.ai_timings(sdb, "hour")
    assert timings.loc[START, "first token p50"] == 100.0 and timings.loc[START, "total p50"] == 400.0
    assert timings.loc[START + timedelta(days=1), "total p95"] == 50.0
    tokens = t.tokens_per_day(sdb)
    assert tokens.loc[START.replace(hour=0)].to_dict() == {"prompt": 10, "completion": 3}
    reasons = t.error_reasons(sdb)
    assert reasons.loc["The AI service is down (HTTP 503).", "errors"] == 1
    assert reasons.loc["The AI service is down (HTTP 503).", "error rate %"] == pytest.approx(100 / 3)
    totals = t.overview_totals(sdb)
    assert totals == {"messages": 7, "ai_replies": 3, "errors": 1, "error_rate": pytest.approx(1 / 3), "users": 2, "channels": 2}


def test_overview_of_an_empty_database(db):
    assert t.messages_over_time(db).empty and t.ai_timings(db).empty
    assert t.error_reasons(db).empty and t.tokens_per_day(db).empty
    assert t.overview_totals(db)["error_rate"] == 0.0


def test_time_ranges():
    now = datetime(2024, 5, 1, 12)
    assert t.since_for("All time", now) is None
    assert t.since_for("Last 24 hours", now) == datetime(2024, 4, 30, 12)
    with pytest.raises(ValidationError, match="Time range"):
        t.since_for("forever", now)


def test_password_gate():
    assert t.password_ok("", None) and t.password_ok("anything", "")
    assert t.password_ok("s3cret", "s3cret")
    assert not t.password_ok("s3cre", "s3cret") and not t.password_ok("", "s3cret") and not t.password_ok(None, "s3cret")


def test_who_may_use_the_console_exports_and_private_tables(sdb):
    # Login mode has roles: an admin (ADMIN_EMAILS) only, and the password unlocks nothing there.
    assert access.admin_unlocked(login=True, admin=True, admin_password="s3cret")
    assert not access.admin_unlocked(login=True, admin=False, admin_password="s3cret", given="s3cret")
    assert not access.admin_unlocked(login=True, admin=False, admin_password=None)
    # Open mode has none: open to all without ADMIN_PASSWORD, else to whoever gives it.
    assert access.admin_unlocked(login=False, admin=False, admin_password=None)
    assert access.admin_unlocked(login=False, admin=False, admin_password="s3cret", given="s3cret")
    assert not access.admin_unlocked(login=False, admin=False, admin_password="s3cret", given="s3cre")
    assert not access.admin_unlocked(login=False, admin=False, admin_password="s3cret")
    assert access.asks_password(False, "s3cret") and not access.asks_password(True, "s3cret")
    assert not access.asks_password(False, None)
    assert access.offers_console(False, False) and access.offers_console(True, True) and not access.offers_console(True, False)
    assert "identities" in access.PRIVATE_TABLES
    assert {info.name for info in access.visible_tables(sdb, False)} == APP_TABLES - access.PRIVATE_TABLES
    assert {info.name for info in access.visible_tables(sdb, True)} == APP_TABLES
    assert access.may_see("messages", False) and not access.may_see("identities", False) and access.may_see("identities", True)
    # embedding_jobs.error holds what the embeddings provider answered: admins only.
    assert not access.may_see("embedding_jobs", False) and access.may_see("embedding_jobs", True)


class Seconds:
    """A monotonic clock the test moves by hand (what access.PasswordTries reads)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _try(tries, given, session="tab-1", client="10.0.0.1"):
    return access.admin_unlocked(login=False, admin=False, admin_password="s3cret", given=given, session=session,
                                 client=client, tries=tries)


def test_wrong_admin_passwords_back_off_per_session_and_say_when():
    clock = Seconds()
    tries = access.PasswordTries(clock)
    for guess in ("a", "b", "c", "d"):
        assert not _try(tries, guess)
    assert not _try(tries, "d")  # the page re-checks the same text on every rerun: not another try
    assert not _try(tries, "e")  # the fifth wrong one: now a wait of 2 s
    with pytest.raises(access.TooManyTries) as refused:
        _try(tries, "s3cret")  # during the wait even the right one is refused: guessing gains nothing
    assert str(refused.value) == "Too many wrong admin passwords. Try again in 2 s."
    clock.now += 2
    assert not _try(tries, "f")  # the sixth: 4 s
    clock.now += 3
    with pytest.raises(access.TooManyTries, match="Try again in 1 s"):
        _try(tries, "g")
    clock.now += 1
    assert _try(tries, "s3cret")  # right, after the wait: and the count starts again
    assert not _try(tries, "h") and _try(tries, "s3cret")  # one wrong again: far from a wait


def test_the_back_off_holds_per_client_across_new_sessions_and_caps_at_an_hour():
    clock = Seconds()
    tries = access.PasswordTries(clock)
    for n in range(access.FREE_TRIES):
        assert not _try(tries, f"guess {n}", session=f"tab-{n}")  # a new browser session for every guess
    with pytest.raises(access.TooManyTries):
        _try(tries, "next", session="tab-new")
    assert _try(tries, "s3cret", session="tab-new", client="10.0.0.2")  # another client is not held back
    for n in range(40):
        clock.now += access.MAX_WAIT
        _try(tries, f"more {n}", session="tab-x")
    with pytest.raises(access.TooManyTries) as refused:
        _try(tries, "s3cret", session="tab-y")
    assert refused.value.wait == access.MAX_WAIT  # never longer than an hour
    # Without a session or client (scripts, the old page call) nothing is counted.
    assert access.admin_unlocked(login=False, admin=False, admin_password="s3cret", given="s3cret", tries=tries)


# quoting ---------------------------------------------------------------------
ODD_NAMES = ['say "hi"', "it's", " two  words ", "zoë 🚀", 'x"; DROP TABLE users; --', "a.b", "back\\slash", "''"]


@pytest.mark.parametrize("text", ODD_NAMES)
def test_quoted_names_and_texts_read_back_as_themselves(text):
    con = duckdb.connect()
    try:
        result = con.execute(f"SELECT {literal(text)} AS {identifier(text)}")
        assert result.description[0][0] == text and result.fetchone() == (text,)
    finally:
        con.close()
    with pytest.raises(ValueError, match="NUL"):
        identifier(text + "\x00")


def test_odd_table_and_column_names_round_trip_through_the_browser(db, backend):
    table, column = 'we"ird tablé 🚀', "it's a \"note\""
    if backend == "postgres":  # made by the driver's own quoting, read back through DuckDB's attachment
        with psycopg.connect(db.path, autocommit=True) as conn:
            conn.execute(pg_sql.SQL("CREATE TABLE {} (id integer, {} text)").format(
                pg_sql.Identifier(table), pg_sql.Identifier(column)))
            conn.execute(pg_sql.SQL("INSERT INTO {} VALUES (1, 'a'), (2, 'B')").format(pg_sql.Identifier(table)))
    else:
        db.write(lambda tx: tx.execute(f"CREATE TABLE {identifier(table)} (id INTEGER, {identifier(column)} VARCHAR)"))
        db.write(lambda tx: tx.execute(f"INSERT INTO {identifier(table)} VALUES (1, 'a'), (2, 'B')"))
    assert dict(t.list_tables(db))[table] == 2
    assert [c.name for c in t.table_columns(db, table)] == ["id", column]
    frame, total = t.browse(db, table, t.Filters(text="b"), t.Sort(column, descending=False))
    assert total == 1 and frame[column].tolist() == ["B"]
    assert pd.read_csv(io.BytesIO(t.export_csv(db, table)))[column].tolist() == ["B", "a"]  # newest id first


# SQL console -----------------------------------------------------------------
def test_console_answers_a_select(sdb):
    frame = t.run_readonly_sql(sdb, "SELECT name, count(*) AS n FROM users GROUP BY name ORDER BY name")
    assert frame.to_dict("records") == [{"name": "Ann", "n": 1}, {"name": "Bob", "n": 1}]
    assert frame.attrs["truncated"] is False
    assert len(t.run_readonly_sql(sdb, "  -- a comment\n from messages ;")) == 7
    assert len(t.run_readonly_sql(sdb, "DESCRIBE messages")) > 10
    assert list(t.run_readonly_sql(sdb, "SELECT 1 AS a, 2 AS a").columns) == ["a", "a_2"]


def test_console_row_cap_truncates(sdb):
    frame = t.run_readonly_sql(sdb, "SELECT * FROM range(100000)", max_rows=1000)
    assert len(frame) == 1000 and frame.attrs["truncated"] is True
    exact = t.run_readonly_sql(sdb, "SELECT * FROM range(1000)", max_rows=1000)
    assert len(exact) == 1000 and exact.attrs["truncated"] is False


REFUSED = [
    ("INSERT INTO users (name, name_key, created_at) VALUES ('Eve', 'eve', now())", "INSERT statements change data"),
    ("UPDATE messages SET content = 'x'", "UPDATE statements change data"),
    ("DELETE FROM messages", "DELETE statements change data"),
    ("DROP TABLE messages", "DROP statements change the schema"),
    ("CREATE TABLE evil AS SELECT * FROM users", "CREATE statements change the schema"),
    ("ALTER TABLE users ADD COLUMN evil INTEGER", "ALTER statements change the schema"),
    ("ATTACH ':memory:' AS other", "ATTACH statements open other databases"),
    ("COPY messages TO '/tmp/out.csv'", "COPY statements read or write files"),
    ("PRAGMA threads = 1", "PRAGMA statements can change settings"),
    ("PRAGMA table_info('messages')", "PRAGMA statements"),
    ("SET threads = 1", "SET statements change settings"),
    ("INSTALL httpfs", "INSTALL statements install extensions"),
    ("LOAD httpfs", "LOAD statements install or load extensions"),
    ("CHECKPOINT", "CHECKPOINT statements maintain storage"),
    ("EXPORT DATABASE '/tmp/dump'", "EXPORT statements write files"),
    ("BEGIN TRANSACTION; DELETE FROM messages; COMMIT", "one statement at a time"),
    ("BEGIN", "BEGIN statements control transactions"),
    ("CALL checkpoint()", "CALL statements run procedures"),
    ("UPDATE extensions", "a statement that starts with UPDATE is not one"),  # a type DuckDB names "???"
    ("update extensions (httpfs)", "a statement that starts with UPDATE is not one"),
    ("select 1; drop table messages", "one statement at a time; this text holds 2"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() reads files outside the database"),
    ("select * from read_text('/etc/hostname')", "read_text() reads files"),
    ("SELECT * FROM main.read_csv_auto('/etc/passwd')", "read_csv_auto() reads files"),
    ("SELECT * FROM read_parquet('x.parquet')", "read_parquet() reads files"),
    ("SELECT * FROM read_json('x.json')", "read_json() reads files"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv() reads files"),
    ("SELECT * FROM glob('*')", "glob() reads files"),
    ("SELECT * FROM '/etc/passwd'", "looks like a file"),
    ("SELECT * FROM 'data.csv'", "looks like a file"),
    ("SELECT * FROM users WHERE id IN (SELECT size FROM read_blob('/etc/passwd'))", "read_blob() reads files"),
    ("SELECT * FROM query('DELETE FROM messages')", "query() is not allowed"),
    ("SELECT * FROM json_execute_serialized_sql('{}')", "json_execute_serialized_sql() is not allowed"),
    ("SELECT * FROM enable_logging()", "enable_logging() is not allowed"),
    ("SELECT nextval('messages_id_seq')", "nextval() is not allowed"),
    ("WITH gone AS (DELETE FROM messages RETURNING *) SELECT * FROM gone", "Parser Error"),
    ("WITH x AS (SELECT 1) INSERT INTO users (name, name_key, created_at) SELECT 'a', 'a', now()", "INSERT statements"),
    ("EXPLAIN ANALYZE DELETE FROM messages", "EXPLAIN statements"),
    ("", "Enter a SELECT query"),
]


@pytest.mark.parametrize("sql, message", REFUSED, ids=[sql[:40] or "empty" for sql, _ in REFUSED])
def test_console_refuses_anything_but_a_select(sdb, sql, message):
    before = snapshot(sdb)
    with pytest.raises(ValidationError) as refused:
        t.run_readonly_sql(sdb, sql)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)
    assert "???" not in str(refused.value)
    assert snapshot(sdb) == before


def test_file_access_is_off_even_if_the_filter_missed_it(sdb):
    """Defence in depth: the connection itself cannot reach files."""
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM glob('*')"):
        with pytest.raises(duckdb.PermissionException):
            sdb.rows(sql)


def test_python_objects_are_not_tables(sdb):
    secret_frame = pd.DataFrame({"secret": [42]})  # DuckDB can scan a caller's DataFrames by name
    with pytest.raises(ValidationError, match="secret_frame does not exist"):
        t.run_readonly_sql(sdb, "SELECT * FROM secret_frame")
    assert secret_frame["secret"].iloc[0] == 42


def test_bad_sql_shows_duckdbs_first_line(sdb):
    with pytest.raises(ValidationError, match=r'^Parser Error: syntax error at or near "SELEC"$'):
        t.run_readonly_sql(sdb, "SELEC 1")
    with pytest.raises(ValidationError, match="^Catalog Error: Table with name nope does not exist!$"):
        t.run_readonly_sql(sdb, "SELECT * FROM nope")
    with pytest.raises(ValidationError, match="too long"):
        t.run_readonly_sql(sdb, "SELECT 1" + " " * t.SQL_MAX_CHARS)


def test_long_query_is_interrupted_by_the_time_cap(sdb):
    before = snapshot(sdb)
    started = time.monotonic()
    with pytest.raises(ValidationError, match=r"ran longer than 0.5 s and was stopped"):
        t.run_readonly_sql(
            sdb, "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = -1", timeout_s=0.5
        )
    assert time.monotonic() - started < 30  # interrupted, not run to the end (which takes hours)
    assert len(t.run_readonly_sql(sdb, "SELECT * FROM users")) == 2  # the connection still works
    assert snapshot(sdb) == before


# who reads what ------------------------------------------------------------------------------------
def test_browse_export_and_charts_hide_unreadable_channels_from_non_admins(db):
    from core import membership

    ann, bob = chat.create_user(db, "Ann"), chat.create_user(db, "Bob")
    general = chat.create_channel(db, "general", reply_policy="off")
    hiring = membership.create_private_channel(db, ann, "hiring")
    chat.update_channel(db, hiring, reply_policy="off")
    chat.send_message(db, general, bob, "lunch at noon")
    chat.send_message(db, hiring, ann, "the offer is 90k")
    as_bob = t.Filters(readable=membership.readable_channels(db, bob))
    frame, total = t.browse(db, "messages", as_bob)
    assert total == 1 and list(frame["content"]) == ["lunch at noon"]
    assert t.browse(db, "messages", t.Filters(readable=membership.readable_channels(db, bob), text="90k"))[1] == 0
    assert list(t.browse(db, "channels", as_bob)[0]["name"]) == ["general"]
    for table in ("memberships", "membership_log"):
        assert t.browse(db, table, as_bob)[1] == 0
    assert "90k" not in t.export_csv(db, "messages", as_bob).decode()
    assert list(t.messages_over_time(db, readable=membership.readable_channels(db, bob)).columns) == ["general"]
    as_ann = t.Filters(readable=membership.readable_channels(db, ann))
    assert t.browse(db, "messages", as_ann)[1] == 2  # a member sees her channel's rows
    assert t.browse(db, "messages", t.Filters())[1] == 2  # an admin (no filter) sees every row
