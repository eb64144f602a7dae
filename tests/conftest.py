"""Shared fixtures: a real DuckDB file per test, and a local OpenAI-compatible server."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from core import chat
from core.store import Database, connect

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis profiles. "dev" (local runs) searches at random, so each run may find something new; "ci" tries the
# same examples on every run (a test cannot fail there by chance) and prints how to replay a failure; "fuzz" is a
# long random search to start by hand. .ci/run sets HYPOTHESIS_PROFILE=ci; so does a CI environment variable.
settings.register_profile("dev", max_examples=300)
settings.register_profile("ci", max_examples=300, derandomize=True, print_blob=True)
settings.register_profile("fuzz", max_examples=20_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
AI_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "AI_WORKERS", "REFRESH_SECONDS",
                "AI_TIMEOUT_SECONDS", "ADMIN_PASSWORD", "LIVE_PUSH", "ADMIN_EMAILS", "IMAGE_HOSTS",
                "MESSAGES_PER_MINUTE", "AI_REPLIES_PER_HOUR", "AI_TOKENS_PER_DAY", "CONSOLE_TIMEOUT_SECONDS",
                "CONSOLE_MEMORY_MB", "EMBEDDING_MODEL", "AI_CONTEXT_TOKENS", "AI_LEASE_SECONDS",
                "AI_TOOL_CALLS_PER_ROUND", "AI_TOOL_CALLS_PER_REPLY", "LIVE_SOCKETS_PER_CLIENT", "LIVE_SOCKETS_TOTAL",
                "RENAMES_PER_HOUR", "CHANNELS_PER_HOUR", "SEARCHES_PER_MINUTE", "ACTIONS_PER_MINUTE",
                "ATTACHMENT_MAX_MB", "ATTACHMENT_MB_PER_DAY")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Point the app's database at tmp_path and forget any OpenAI settings of the machine."""
    monkeypatch.setenv("CHAT_DB", str(tmp_path / "chat.duckdb"))
    for name in AI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def pg_server():
    """One real Postgres server for the whole run (Debian's postgresql; .ci/run installs it)."""
    from pgserver import PostgresServer

    try:
        server = PostgresServer().start()
    except FileNotFoundError as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error}: CI must run the Postgres half of the suite")
        pytest.skip(f"{error}: the Postgres half of the suite cannot run here")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_template(pg_server) -> str:
    """A migrated database that each test's database is copied from (copying beats migrating every time)."""
    url = pg_server.create_database()
    connect(url).close()
    return url.rsplit("/", 1)[1]


@pytest.fixture
def pg_url(pg_server, pg_template) -> str:
    """The URL of a fresh, migrated Postgres database of this test's own."""
    return pg_server.create_database(template=pg_template)


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_target(backend, tmp_path, request) -> str:
    """Where this test's database lives: a DuckDB file under tmp_path, or a fresh Postgres database."""
    if backend == "duckdb":
        return str(tmp_path / "test.duckdb")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_target) -> Database:
    """A migrated database: a real DuckDB file under tmp_path, or a real Postgres database (each test runs on both)."""
    database = connect(db_target)
    yield database
    database.close()


@pytest.fixture
def duck_db(tmp_path) -> Database:
    """A migrated DuckDB file, for what only the DuckDB backend does (file locks, its conflict retries)."""
    database = connect(str(tmp_path / "test.duckdb"))
    yield database
    database.close()


@pytest.fixture
def fake_openai():
    """A running local OpenAI-compatible server (tests/fake_openai.py)."""
    from fake_openai import FakeOpenAI

    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def app_test():
    """Build an AppTest of the navigation script that app.py serves (views/main.py).

    The app's cached database and AI worker are released afterwards.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def build(page: str | None = None, **session) -> AppTest:
        at = AppTest.from_file(str(ROOT / "views" / "main.py"), default_timeout=30)
        for key, value in session.items():
            at.session_state[key] = value
        if page:  # a page by its path in the repository ("views/users.py"), as the navigation script names it
            at.switch_page(str((ROOT / page).relative_to(ROOT / "views")))
        return at

    yield build
    st.cache_resource.clear()


@pytest.fixture
def app_db(isolated_settings):
    """The database the app under AppTest uses (the same cached object), for seeding and checking."""
    import os

    from views.common import _database

    return _database(os.environ["CHAT_DB"])


@pytest.fixture
def ann(db) -> int:
    """A user named Ann, in the ``db`` under test."""
    return chat.create_user(db, "Ann")


@pytest.fixture
def general(db) -> int:
    """A channel named general where the AI stays quiet (a module that wants replies defines its own)."""
    return chat.create_channel(db, "general", reply_policy="off")
