"""Storage faults of a real Postgres server: a read-only database, a full disk. A write that fails says so in
words (nothing saved), reading goes on, and the app carries on once the server can write again."""
from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import pytest

from core import chat
from core.errors import StorageError, ValidationError
from core.store import connect


def _drop_connections(admin: psycopg.Connection, database: str) -> None:
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                  [database])


def test_a_read_only_postgres_database_refuses_writes_readably(pg_server, pg_url):
    db = connect(pg_url)
    try:
        ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
        chat.send_message(db, quiet, ann, "before")
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            _drop_connections(admin, name)  # the setting applies to new sessions: the pool reconnects
        with pytest.raises(StorageError) as caught:
            chat.send_message(db, quiet, ann, "during")
        said = str(caught.value)
        assert "read-only" in said and "Nothing was saved" in said and name in said
        assert [m.content for m in chat.read_messages_uncached(db, quiet)] == ["before"]  # reading goes on
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
            _drop_connections(admin, name)
        chat.send_message(db, quiet, ann, "after")
        assert [m.content for m in reversed(chat.read_messages_uncached(db, quiet))] == ["before", "after"]
    finally:
        db.close()


def test_a_full_disk_on_the_postgres_server_is_a_sentence(tmp_path, monkeypatch):
    """A Postgres of its own, its data on a small tmpfs that a ballast file fills."""
    import os
    import shutil

    from faultfs import fill, tmpfs
    from pgserver import PostgresServer

    folder = Path(tempfile.mkdtemp(prefix="chat-pgdisk-"))  # not under tmp_path: the postgres user must reach it
    folder.chmod(0o755)
    with tmpfs(folder, "96m") as disk:
        os.chmod(disk, 0o777)
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        try:
            server = PostgresServer().start()
        except FileNotFoundError as error:
            pytest.skip(str(error)) if not os.environ.get("CI") else pytest.fail(str(error))
        try:
            url = server.create_database()
            db = connect(url)
            try:
                ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
                chat.send_message(db, quiet, ann, "before")
                ballast = fill(disk)
                with pytest.raises(StorageError) as caught:
                    for i in range(50):  # a new page for the table (or its TOAST table) needs room on the disk
                        chat.send_message(db, quiet, ann, f"{i} " + os.urandom(4000).hex())
                assert "disk is full" in str(caught.value) and "Nothing was saved" in str(caught.value)
                ballast.unlink()
                chat.send_message(db, quiet, ann, "after")
                assert chat.read_messages_uncached(db, quiet, limit=1)[0].content == "after"
            finally:
                db.close()
        finally:
            server.cleanup()
            shutil.rmtree(server.root, ignore_errors=True)
    folder.rmdir()


PASSWORD = "se cret 'pw"  # a space and a quote: a connection string that carried it would show it in pieces


def _with_password(url: str, password: str = PASSWORD) -> str:
    from urllib.parse import quote

    return url.replace("postgresql://postgres@", f"postgresql://postgres:{quote(password, safe='')}@", 1)


def _pieces(text: str) -> list[str]:
    return [piece for piece in ("se cret", "se%20", "cret '", "'pw", "%27pw") if piece in text]


def test_the_database_password_travels_apart_and_no_error_text_holds_it(pg_server, pg_url):
    from pgserver import free_port

    from core.errors import DatabaseUnavailable
    from core.store.pg import split_password

    dsn, password = split_password(_with_password(pg_url))
    assert password == PASSWORD and not _pieces(dsn)
    db = connect(_with_password(pg_url))  # the test server trusts local logins: the password is sent, not checked
    try:
        chat.create_user(db, "Ann")
        with db.analytics() as con:  # the Tables page's DuckDB attachment: its DSN is readable, the password is not
            assert con.execute("SELECT count(*) FROM users").fetchone() == (1,)
            shown = " ".join(str(row) for row in con.execute("SELECT * FROM duckdb_databases()").fetchall())
            assert "127.0.0.1" in shown and not _pieces(shown)
            secrets = str(con.execute("SELECT secret_string FROM duckdb_secrets()").fetchall())
            assert "password=redacted" in secrets and not _pieces(secrets)
        assert not _pieces(db.describe())
    finally:
        db.close()
    nowhere = _with_password(f"postgresql://postgres@127.0.0.1:{free_port()}/chat")
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(nowhere)
    assert "unreachable" in str(caught.value) and not _pieces(str(caught.value))
    # Not percent-encoded: libpq's own error quotes the password ('unexpected spaces found in "se cret"...').
    with pytest.raises(ValidationError) as unreadable:
        connect(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/chat")
    assert "percent-encoded" in str(unreadable.value) and not _pieces(str(unreadable.value))
