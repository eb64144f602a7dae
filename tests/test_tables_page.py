"""views/tables.py under AppTest: every table renders, filters narrow, exports parse back, the console and its gate."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test
from streamlit.testing.v1 import AppTest

from core.tables import access

from core import chat, jobs, replies
from core import tables as t
from core.store import connect

PAGE = str(Path(__file__).resolve().parent.parent / "views" / "tables.py")
RUN_TIMEOUT = 60  # seconds: generous for the million-row run on 2 shared cores


@pytest.fixture(autouse=True)
def fresh_caches():
    """The page's database is cached per process: start each test on its own file, and close it after."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()  # on_release closes the page's Database


@pytest.fixture
def seeded(db_target, monkeypatch):
    """The app's database (a DuckDB file under tmp_path, or Postgres) with two channels, two users and an AI reply."""
    monkeypatch.setenv("CHAT_DB", db_target)
    db = connect(db_target)
    ann, bob = chat.create_user(db, "Ann"), chat.create_user(db, "Bob")
    general = chat.create_channel(db, "general")
    quiet = chat.create_channel(db, "quiet", reply_policy="off")
    chat.send_message(db, general, ann, "Hello World")
    replies.finish_reply(db, jobs.claim_next_job(db), "Hi Ann", prompt_tokens=5, completion_tokens=2,
                         ttft_ms=80.0, total_ms=300.0)
    chat.send_message(db, quiet, bob, "a quiet note")
    chat.send_message(db, quiet, ann, "another quiet note")
    ids = {"ann": ann, "bob": bob, "general": general, "quiet": quiet, "counts": dict(t.list_tables(db))}
    db.close()  # the page opens the file itself
    return ids


@pytest.fixture
def downloads(monkeypatch):
    """Read what a download button would send: keep AppTest's media manager and run the deferred export."""
    managers = []
    real = app_test.MediaFileManager

    def keep(storage):
        managers.append(real(storage))
        return managers[-1]

    monkeypatch.setattr(app_test, "MediaFileManager", keep)

    def fetch(button) -> bytes:
        manager = managers[-1]
        url = manager.execute_deferred(button.proto.deferred_file_id)
        return manager.read_file(url.rsplit("/", 1)[-1]).content

    return fetch


def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=RUN_TIMEOUT)
    return at.run()


def shown(at: AppTest) -> pd.DataFrame:
    assert not at.exception, at.exception
    return at.dataframe[0].value


def open_console(at: AppTest) -> AppTest:
    return at.radio(key="tables_view").set_value("SQL console").run()


def run_sql(at: AppTest, sql: str) -> AppTest:
    at.text_area(key="console_sql").input(sql)
    return at.button[0].click().run()


def test_every_table_renders(seeded):
    at = page()
    assert at.selectbox(key="tables_table").value == "messages"
    for name, rows in seeded["counts"].items():
        at.selectbox(key="tables_table").set_value(name).run()
        frame = shown(at)
        assert len(frame) == rows, name
    assert f"messages · {seeded['counts']['messages']:,} rows" in at.selectbox(key="tables_table").options  # with its row count


def test_messages_show_names_and_filters_narrow_the_rows(seeded):
    at = page()
    frame = shown(at)
    assert len(frame) == 4 and {"channel", "author"} <= set(frame.columns)
    assert set(frame["author"]) == {"Ann", "Bob", "AI"}
    at.selectbox(key="filter_channel").set_value(seeded["quiet"]).run()
    assert set(shown(at)["content"]) == {"a quiet note", "another quiet note"}
    at.selectbox(key="filter_author").set_value(seeded["ann"]).run()
    assert list(shown(at)["content"]) == ["another quiet note"]
    at.selectbox(key="filter_channel").set_value(None)
    at.selectbox(key="filter_author").set_value(t.AI_AUTHOR).run()
    assert list(shown(at)["content"]) == ["Hi Ann"]
    at.selectbox(key="filter_author").set_value(None)
    at.text_input(key="filter_text").input("HELLO").run()
    assert list(shown(at)["content"]) == ["Hello World"]
    at.text_input(key="filter_text").input("")
    at.selectbox(key="filter_status_messages").set_value("complete").run()
    assert len(shown(at)) == 4


def test_sort_and_pages(seeded):
    at = page()
    at.selectbox(key="sort_messages").set_value("content")
    at.radio(key="order_messages").set_value("Ascending").run()
    contents = list(shown(at)["content"])
    assert contents == sorted(contents)
    assert at.number_input(key="page_messages").max == 1


def test_exports_parse_back_to_the_rows_shown(seeded, downloads):
    at = page()
    at.selectbox(key="filter_channel").set_value(seeded["quiet"]).run()
    visible = shown(at)
    csv = pd.read_csv(io.BytesIO(downloads(at.download_button(key="export_csv"))))
    parquet = pq.read_table(io.BytesIO(downloads(at.download_button(key="export_parquet")))).to_pandas()
    assert list(csv["id"]) == list(visible["id"]) == list(parquet["id"])
    assert list(csv["content"]) == list(visible["content"]) == list(parquet["content"])
    assert list(parquet.columns) == list(visible.columns)


def test_console_answers_a_select(seeded):
    at = open_console(page())
    run_sql(at, "SELECT name FROM users ORDER BY name")
    assert not at.error
    assert list(shown(at)["name"]) == ["Ann", "Bob"]


def test_console_refusal_is_an_error_not_a_traceback(seeded):
    at = open_console(page())
    run_sql(at, "DROP TABLE messages")
    assert not at.exception
    assert "DROP statements change the schema" in at.error[0].value
    run_sql(at, "SELECT * FROM read_csv('/etc/passwd')")
    assert "reads files outside the database" in at.error[0].value
    run_sql(at, "SELECT count(*) AS n FROM messages")
    assert not at.error and shown(at)["n"].iloc[0] == 4


def test_open_without_admin_password_and_says_so(seeded):
    at = page()
    assert any("No ADMIN_PASSWORD is set" in c.value for c in at.caption)
    assert len(at.download_button) == 2


def test_admin_password_gates_console_and_exports(seeded, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "s3cret")
    at = page()
    assert not at.download_button and any("Exports need the admin password" in c.value for c in at.caption)
    open_console(at)
    assert not at.text_area and "admin password" in at.info[0].value
    at.text_input(key="tables_admin_password").input("wrong").run()
    assert at.error[0].value == "Wrong admin password." and not at.text_area
    at.text_input(key="tables_admin_password").input("s3cret").run()
    assert not at.error
    run_sql(at, "SELECT 42 AS answer")
    assert shown(at)["answer"].iloc[0] == 42
    at.radio(key="tables_view").set_value("Browse").run()
    assert len(at.download_button) == 2


def test_wrong_admin_passwords_make_the_page_wait(seeded, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "s3cret")
    at = page()
    for i in range(access.FREE_TRIES):
        at.text_input(key="tables_admin_password").input(f"guess {i}").run()
        assert at.error[0].value == "Wrong admin password."
    at.text_input(key="tables_admin_password").input("one more guess").run()
    assert at.error[0].value.startswith("Too many wrong admin passwords. Try again in")
    at.text_input(key="tables_admin_password").input("s3cret").run()  # even the right one waits
    assert at.error[0].value.startswith("Too many wrong admin passwords") and not at.download_button
    assert not at.exception
    assert page().text_input(key="tables_admin_password")  # another browser session is not held back


def test_admin_password_from_secrets(seeded):
    at = AppTest.from_file(PAGE, default_timeout=RUN_TIMEOUT)
    at.secrets["ADMIN_PASSWORD"] = "from-secrets"
    at.run()
    assert not at.download_button
    at.text_input(key="tables_admin_password").input("from-secrets").run()
    assert len(at.download_button) == 2


def test_overview_and_live_toggle_render(seeded):
    at = page()
    at.radio(key="tables_view").set_value("Overview").run()
    assert not at.exception
    assert [m.value for m in at.metric][:4] == ["4", "1", "0", "0.0%"]
    assert "Messages per channel" in [s.value for s in at.subheader]
    at.toggle(key="tables_live").set_value(True).run()
    assert not at.exception


def test_a_million_messages_never_reach_the_page(seeded):
    """The page gets one page of rows from SQL; the table itself stays in DuckDB."""
    db = connect(os.environ["CHAT_DB"])
    db.write(lambda tx: tx.execute(
        "INSERT INTO messages (channel_id, author_id, content, status, created_at) "
        "SELECT ?, ?, 'bulk ' || i, 'complete', TIMESTAMP '2024-01-01' + i * INTERVAL '1 second' "
        "FROM generate_series(0, 999999) r(i)",
        [seeded["general"], seeded["ann"]],
    ))
    db.close()
    at = page()
    assert len(shown(at)) == t.DEFAULT_PAGE_SIZE
    assert any("of 1,000,004" in c.value for c in at.caption)
    assert any("Exports hold the first 100,000" in c.value for c in at.caption)
    at.number_input(key="page_messages").set_value(20000).run()
    assert len(shown(at)) == t.DEFAULT_PAGE_SIZE
    at.radio(key="tables_view").set_value("Overview").run()
    assert not at.exception and at.metric[0].value == "1,000,004"


def test_feedback_on_ai_replies_is_on_the_overview_and_revisions_are_private(seeded, monkeypatch):
    from core import edits, reactions

    db = connect(os.environ["CHAT_DB"])
    reply = db.one("SELECT id FROM messages WHERE author_id IS NULL")[0]
    reactions.toggle_reaction(db, reply, seeded["ann"], "👍")
    reactions.toggle_reaction(db, reply, seeded["bob"], "👎")
    note = db.one("SELECT id FROM messages WHERE content = 'a quiet note'")[0]
    edits.edit_message(db, note, seeded["bob"], "a quieter note")
    db.close()
    monkeypatch.setenv("ADMIN_PASSWORD", "letmein")
    at = page()
    at.radio(key="tables_view").set_value("Overview").run()
    assert not at.exception and "Feedback on AI replies" in [s.value for s in at.subheader]
    frame = next(d.value for d in at.dataframe if "👍" in d.value.columns)
    assert frame.to_dict("records") == [{"model": "(no model)", "channel": "general", "replies": 1, "👍": 1, "👎": 1}]
    at.radio(key="tables_view").set_value("Browse").run()
    options = at.selectbox(key="tables_table").options
    assert any(o.startswith("reactions") for o in options)
    assert not any(o.startswith("message_revisions") for o in options)  # admins only: the old texts
