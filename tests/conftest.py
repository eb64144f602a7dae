"""Shared fixtures: a real DuckDB file per test, and a local OpenAI-compatible server."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.db import Database, connect

ROOT = Path(__file__).resolve().parent.parent
AI_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "AI_WORKERS", "REFRESH_SECONDS",
                "AI_TIMEOUT_SECONDS", "ADMIN_PASSWORD", "EMBEDDING_MODEL")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Point the app's database at tmp_path and forget any OpenAI settings of the machine."""
    monkeypatch.setenv("CHAT_DB", str(tmp_path / "chat.duckdb"))
    for name in AI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def db(tmp_path) -> Database:
    """A migrated database in a real file under tmp_path."""
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
    """Build an AppTest of app.py; the app's cached database and AI worker are released afterwards."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def build(page: str | None = None, **session) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        for key, value in session.items():
            at.session_state[key] = value
        if page:
            at.switch_page(page)
        return at

    yield build
    st.cache_resource.clear()


@pytest.fixture
def app_db(isolated_settings):
    """The database the app under AppTest uses (the same cached object), for seeding and checking."""
    import os

    from views.common import _database

    return _database(os.environ["CHAT_DB"])
