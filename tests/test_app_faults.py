"""Faults in AppTest: bad settings, bad CHAT_DB targets, odd query parameters, a full disk, a vanished file.

Each one is a sentence on the page that names what is wrong and what to do; never Streamlit's error box
(``at.exception``), never DuckDB's own text alone, never a secret.
"""
from __future__ import annotations

import os
import shutil
import sqlite3

import duckdb
import pytest
from message_list import texts

from core import chat
from core.store import connect

CHANNELS = "views/channels.py"
USERS = "views/users.py"
TABLES = "views/tables.py"


def _texts(at) -> str:
    """Everything the page says in alerts and captions, main area and sidebar."""
    parts = [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.info]
    parts += [e.value for e in at.sidebar.error] + [c.value for c in at.caption]
    return " ".join(parts)


def _page_error(at) -> str:
    assert not at.exception, f"Streamlit's error box: {[e.value for e in at.exception]}"
    assert at.error, "no error shown"
    return at.error[0].value


# settings --------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, value, says",
    [
        ("AI_WORKERS", "abc", "AI_WORKERS must be a whole number"),
        ("AI_WORKERS", "0", "AI_WORKERS must be between 1 and 64"),
        ("REFRESH_SECONDS", "0", "REFRESH_SECONDS must be between"),
        ("REFRESH_SECONDS", "fast", "REFRESH_SECONDS must be a number"),
        ("AI_TIMEOUT_SECONDS", "-5", "AI_TIMEOUT_SECONDS must be between"),
        ("AI_LEASE_SECONDS", "x", "AI_LEASE_SECONDS must be a number"),
        ("OPENAI_BASE_URL", "ftp://me:hunter2@example.com", "OPENAI_BASE_URL must be an http(s) address"),
        ("OPENAI_BASE_URL", "http://me:hunter2@example.com:port/v1", "OPENAI_BASE_URL must be an http(s) address"),
    ],
)
@pytest.mark.parametrize("page", [None, USERS, CHANNELS, TABLES])
def test_a_bad_setting_is_a_sentence_on_every_page(app_test, monkeypatch, name, value, says, page):
    monkeypatch.setenv(name, value)
    at = app_test(page=page).run()
    said = _page_error(at)
    assert said.startswith("A setting needs fixing:") and says in said
    assert "hunter2" not in _texts(at)


def test_a_secrets_file_that_is_not_toml_is_a_sentence_without_its_text(app_test, tmp_path):
    import streamlit as st

    broken = tmp_path / "secrets.toml"
    broken.write_text('OPENAI_API_KEY = "sk-hunter2\n[[[')
    saved = st.config.get_option("secrets.files")
    st.config.set_option("secrets.files", [str(broken)])
    st.secrets._secrets = None  # parse again, from the file above
    try:
        at = app_test().run()
    finally:
        st.config.set_option("secrets.files", saved)
        st.secrets._secrets = None
    said = _page_error(at)
    assert "secrets.toml" in said and "not valid TOML" in said and "hunter2" not in _texts(at)


# database targets ------------------------------------------------------------
def _write_damaged_duckdb(path: str) -> None:
    """A real app database with enough rows to span many blocks, then cut to half its size."""
    db = connect(path)
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    db.write(lambda tx: tx.execute(
        "INSERT INTO messages (channel_id, author_id, content, created_at, status) "
        "SELECT ?, ?, 'message ' || i || ' ' || repeat('x', 200), now(), 'complete' FROM range(3000) t(i)",
        [general, ann]))
    db.close()
    os.truncate(path, os.path.getsize(path) // 2)


def _flip_bytes(path: str) -> None:
    connect(path).close()
    with open(path, "r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 64)  # inside the header block: its checksum no longer matches


TARGETS = {
    "folder": (lambda p: os.mkdir(p), "names a folder"),
    "text file": (lambda p: open(p, "w").write("hello, I am a text file\n"), "is not a DuckDB database file"),
    "empty file": (lambda p: open(p, "w").close(), "is not a DuckDB database file"),
    "sqlite file": (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(),
                    "is an SQLite database"),
    "truncated to half": (_write_damaged_duckdb, "is damaged"),
    "checksum damage": (_flip_bytes, "is damaged"),
}


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_bad_database_file_is_a_readable_page_naming_it(app_test, isolated_settings, kind):
    path = os.environ["CHAT_DB"]
    make, says = TARGETS[kind]
    make(path)
    before = os.path.getsize(path) if os.path.isfile(path) else None
    at = app_test().run()
    said = _page_error(at)
    assert says in said and path in said
    assert "CHAT_DB" in said  # what to do
    assert "Another Channel Chat instance" not in said  # only a real lock says that
    assert "Stack Trace" not in said and "\n" not in said
    assert "Error:" not in said and "checksum" not in said  # DuckDB's own words go to the log, not the page
    if before is not None:
        assert os.path.getsize(path) == before  # never replaced or "repaired"


def test_a_folder_that_cannot_be_written_is_a_readable_page(app_test, monkeypatch, tmp_path):
    from faultfs import tmpfs

    with tmpfs(tmp_path / "readonly", "1m", read_only=True) as folder:
        path = str(folder / "chat.duckdb")
        monkeypatch.setenv("CHAT_DB", path)
        at = app_test().run()
        said = _page_error(at)
    assert path in said and "read-only" in said and "CHAT_DB" in said


def test_a_chat_db_under_a_file_is_a_readable_page(app_test, monkeypatch, tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    monkeypatch.setenv("CHAT_DB", str(tmp_path / "plain" / "chat.duckdb"))
    said = _page_error(app_test().run())
    assert said.startswith("A setting needs fixing: CHAT_DB") and "plain" in said


# query parameters ------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    ["²", "٣", "1²", "99999999999999999999999", "-1", "0", "", "abc", "1e3", " 2", "2 ", "0x2", "1.0", "<script>", "%00"],
)
def test_odd_channel_links_never_break_the_page(app_test, app_db, value):
    ann = chat.create_user(app_db, "Ann")
    first = chat.create_channel(app_db, "alpha", reply_policy="off")
    chat.create_channel(app_db, "beta", reply_policy="off")
    chat.send_message(app_db, first, ann, "hello")
    at = app_test()
    at.query_params["channel"] = value
    at.query_params["embed"] = "true"  # other parameters, Streamlit's own or not, are left alone
    at.query_params["unknown"] = ["a", "b"]
    at.run()
    assert not at.exception and not at.error
    assert at.header[0].value == "# alpha"  # the first channel, as without a link
    assert at.query_params["channel"] == str(first)


def test_a_channel_link_still_opens_its_channel(app_test, app_db):
    chat.create_user(app_db, "Ann")
    chat.create_channel(app_db, "alpha")
    beta = chat.create_channel(app_db, "beta")
    at = app_test()
    at.query_params["channel"] = str(beta)
    at.run()
    assert not at.exception and at.header[0].value == "# beta"


# storage faults while the app runs -----------------------------------------
def test_a_send_on_a_full_disk_says_it_was_not_sent_and_keeps_the_text(app_test, monkeypatch, tmp_path):
    from faultfs import fill, tmpfs

    with tmpfs(tmp_path / "disk", "16m") as disk:
        monkeypatch.setenv("CHAT_DB", str(disk / "chat.duckdb"))
        from views.common import _database

        db = _database(str(disk / "chat.duckdb"))
        ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
        at = app_test(user_id=ann, channel_id=quiet).run()
        ballast = fill(disk)
        at.chat_input[0].set_value("hello while full").run()
        said = _page_error(at)
        assert said.startswith("Your message was not sent. ") and "the disk is full" in said
        assert at.chat_input[0].proto.value == "hello while full"  # back in the box
        for page in (USERS, CHANNELS):  # the other pages still read
            assert not app_test(page=page).run().exception
        at = app_test(page=CHANNELS).run()
        at.text_input[0].input("new-channel")
        next(b for b in at.button if b.label == "Create channel").click()
        at.run()
        assert "the disk is full" in _page_error(at)
        ballast.unlink()
        at = app_test(user_id=ann, channel_id=quiet).run()
        at.chat_input[0].set_value("hello again").run()
        assert not at.exception and not at.error
        assert [m.content for m in chat.list_messages(db, quiet)] == ["hello again"]
        import streamlit as st

        st.cache_resource.clear()  # close the file before the tmpfs goes


def test_a_database_file_that_vanished_is_a_sentence_and_comes_back(app_test, monkeypatch, tmp_path):
    """DuckDB stopped (a checkpoint hit a full disk), then the file was moved away: the page says so, never an
    empty new database in its place; once the file is back, the app reopens it by itself."""
    import streamlit as st
    from faultfs import fill, tmpfs

    from core.errors import StorageError
    from views.common import _database

    with tmpfs(tmp_path / "disk", "16m") as disk:
        path = str(disk / "chat.duckdb")
        monkeypatch.setenv("CHAT_DB", path)
        db = _database(path)
        ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
        chat.send_message(db, quiet, ann, "kept")
        ballast = fill(disk)
        with pytest.raises(StorageError):
            db.rows("CHECKPOINT")  # DuckDB stops the database for good: "database has been invalidated"
        ballast.unlink()
        shutil.move(path, path + ".moved")
        at = app_test(user_id=ann, channel_id=quiet).run()
        said = _page_error(at)
        assert "is gone" in said and path in said
        assert not os.path.exists(path)  # no empty database was started in its place
        shutil.move(path + ".moved", path)
        at = app_test(user_id=ann, channel_id=quiet).run()
        assert not at.exception and not at.error
        assert texts(at) == ["kept"]
        with pytest.raises(duckdb.Error):  # the app holds the file again
            duckdb.connect(path)
        st.cache_resource.clear()  # close the file before the tmpfs goes


# an AI server without embeddings ---------------------------------------------
@pytest.mark.parametrize("page", [None, TABLES])
def test_an_ai_server_without_embeddings_is_said_beside_the_ais_state(app_test, app_db, fake_openai, page):
    import time

    from core import embeddings

    fake_openai.embeddings_status = 404
    ann, general = chat.create_user(app_db, "Ann"), chat.create_channel(app_db, "general", reply_policy="off")
    chat.send_message(app_db, general, ann, "We ship the new version on Friday")
    at = app_test(page=page, user_id=ann, channel_id=general, tables_view="Overview")
    at.secrets["OPENAI_API_KEY"] = "test-key"
    at.secrets["OPENAI_BASE_URL"] = fake_openai.base_url
    at.run()  # starts the Embedder, which asks the server once
    deadline = time.monotonic() + 20
    while embeddings.fallback_reason(app_db) is None:
        assert time.monotonic() < deadline, "the Embedder never found the server without embeddings"
        time.sleep(0.05)
    at.run()
    said = "The AI server has no embeddings (HTTP 404 for text-embedding-3-small), so semantic search uses the local"
    assert not at.exception and any(said in c.value for c in at.sidebar.caption)
    if page == TABLES:
        assert any(said in c.value for c in at.main.caption)
    assert len(fake_openai.embedding_requests) == 1
