"""Shared fixtures: a real DuckDB file per test, and a local OpenAI-compatible server."""
from __future__ import annotations

import pytest

from core.db import Database, connect

AI_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "AI_WORKERS", "REFRESH_SECONDS",
                "AI_TIMEOUT_SECONDS", "ADMIN_PASSWORD")


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
