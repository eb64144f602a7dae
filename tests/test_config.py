"""Settings from the environment and overrides, with readable errors for bad values."""
from __future__ import annotations

import os
import re

import pytest

from core.config import DEFAULT_DB, DEFAULT_MODEL, Settings, load_settings
from core.errors import ValidationError


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("CHAT_DB")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings == Settings()
    assert settings.db_path == DEFAULT_DB
    assert settings.openai_model == DEFAULT_MODEL == "gpt-4o"
    assert (settings.ai_workers, settings.refresh_seconds, settings.ai_timeout) == (4, 15.0, 60.0)
    assert settings.live_push  # changes are pushed; the refresh is the slow fallback
    assert settings.openai_api_key is None and settings.admin_password is None
    assert not settings.ai_enabled
    assert (tmp_path / "data").is_dir()  # the default database's folder exists before DuckDB opens it


def test_environment_is_read(monkeypatch, tmp_path):
    env = {
        "CHAT_DB": str(tmp_path / "env.duckdb"),
        "OPENAI_API_KEY": "sk-env",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_MODEL": "gpt-4o-mini",
        "AI_WORKERS": " 8 ",
        "REFRESH_SECONDS": "0.5",
        "AI_TIMEOUT_SECONDS": "30",
        "ADMIN_PASSWORD": "hunter2",
        "LIVE_PUSH": "off",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == Settings(
        db_path=str(tmp_path / "env.duckdb"),
        openai_api_key="sk-env",
        openai_base_url="http://127.0.0.1:9/v1",
        openai_model="gpt-4o-mini",
        ai_workers=8,
        refresh_seconds=0.5,
        ai_timeout=30.0,
        admin_password="hunter2",
        live_push=False,
    )
    assert load_settings().ai_enabled


def test_overrides_win_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("AI_WORKERS", "8")
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    overrides = {
        "OPENAI_API_KEY": "sk-secret",
        "AI_WORKERS": 2,
        "REFRESH_SECONDS": 3.5,
        "CHAT_DB": str(tmp_path / "secret.duckdb"),
        "connections": {"duckdb": {"url": "ignored"}},  # a secrets section, not a setting
    }
    settings = load_settings(overrides)
    assert settings.openai_api_key == "sk-secret"
    assert settings.ai_workers == 2
    assert settings.refresh_seconds == 3.5
    assert settings.db_path == str(tmp_path / "secret.duckdb")
    assert settings.openai_model == "from-env"  # not overridden: the environment still counts


def test_blank_values_mean_unset(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "   ")
    monkeypatch.setenv("OPENAI_MODEL", "")
    monkeypatch.setenv("AI_WORKERS", " ")
    settings = load_settings()
    assert settings.openai_api_key is None and not settings.ai_enabled
    assert settings.openai_model == DEFAULT_MODEL
    assert settings.ai_workers == 4


@pytest.mark.parametrize(
    "name, value",
    [
        ("AI_WORKERS", "zero"),
        ("AI_WORKERS", "0"),
        ("AI_WORKERS", "65"),
        ("AI_WORKERS", "2.5"),
        ("AI_WORKERS", "-1"),
        ("REFRESH_SECONDS", "soon"),
        ("REFRESH_SECONDS", "0.1"),
        ("REFRESH_SECONDS", "61"),
        ("REFRESH_SECONDS", "nan"),
        ("AI_TIMEOUT_SECONDS", "forever"),
        ("AI_TIMEOUT_SECONDS", "0.5"),
        ("AI_TIMEOUT_SECONDS", "601"),
        ("AI_TIMEOUT_SECONDS", "inf"),
    ],
)
def test_bad_number_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    message = str(caught.value)
    assert name in message
    assert repr(value) in message  # the person sees what they typed
    assert "between" in message
    assert not re.search(r"\b(int|float|str|NoneType|ValueError)\b", message)  # a sentence, no program words


@pytest.mark.parametrize("name, value, message", [
    ("AI_WORKERS", "zero", "AI_WORKERS must be a whole number between 1 and 64, not 'zero'."),
    ("AI_WORKERS", "2.5", "AI_WORKERS must be a whole number between 1 and 64, not '2.5'."),
    ("AI_WORKERS", "65", "AI_WORKERS must be between 1 and 64, not '65'."),
    ("REFRESH_SECONDS", "soon", "REFRESH_SECONDS must be a number between 0.2 and 60, not 'soon'."),
    ("AI_TIMEOUT_SECONDS", "0.5", "AI_TIMEOUT_SECONDS must be between 1 and 600, not '0.5'."),
])
def test_bad_number_reads_as_a_sentence(name, value, message):
    with pytest.raises(ValidationError) as caught:
        load_settings({name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize("name, value", [("AI_WORKERS", 0), ("REFRESH_SECONDS", 100.0), ("AI_TIMEOUT_SECONDS", "x")])
def test_bad_override_names_the_variable(name, value):
    with pytest.raises(ValidationError, match=name):
        load_settings({name: value})


def test_limits_are_inclusive(monkeypatch):
    settings = load_settings({"AI_WORKERS": "1", "REFRESH_SECONDS": "0.2", "AI_TIMEOUT_SECONDS": "600"})
    assert (settings.ai_workers, settings.refresh_seconds, settings.ai_timeout) == (1, 0.2, 600.0)
    settings = load_settings({"AI_WORKERS": 64, "REFRESH_SECONDS": 60, "AI_TIMEOUT_SECONDS": 1})
    assert (settings.ai_workers, settings.refresh_seconds, settings.ai_timeout) == (64, 60.0, 1.0)


def test_database_folder_is_created(monkeypatch, tmp_path):
    path = tmp_path / "deep" / "er" / "chat.duckdb"
    monkeypatch.setenv("CHAT_DB", str(path))
    assert load_settings().db_path == str(path)
    assert path.parent.is_dir()
    assert not path.exists()  # only the folder: DuckDB creates the file


def test_memory_database_is_allowed(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAT_DB", ":memory:")
    assert load_settings().db_path == ":memory:"
    assert os.listdir(tmp_path) == []


def test_uncreatable_folder_names_chat_db(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHAT_DB", str(blocker / "chat.duckdb"))
    with pytest.raises(ValidationError, match="CHAT_DB") as caught:
        load_settings()
    assert str(blocker) in str(caught.value)


def test_a_postgres_url_from_a_connections_section_of_the_secrets(monkeypatch):
    monkeypatch.delenv("CHAT_DB", raising=False)
    url = "postgresql://chat:pw@db.example.com/chat"
    assert load_settings({"connections": {"chat": {"url": url}}}).db_path == url
    monkeypatch.setenv("CHAT_DB", "data/other.duckdb")  # CHAT_DB, when set, wins
    assert load_settings({"connections": {"chat": {"url": url}}}).db_path == "data/other.duckdb"


def test_settings_never_print_their_secrets():
    shown = repr(Settings(db_path="postgresql://chat:pg-pass@h/db", openai_api_key="sk-key", admin_password="admin-pass"))
    assert not any(secret in shown for secret in ("pg-pass", "sk-key", "admin-pass"))


@pytest.mark.parametrize("value, expected", [("on", True), ("OFF", False), ("0", False), (" yes ", True), (False, False)])
def test_live_push_switch(value, expected):
    assert load_settings({"LIVE_PUSH": value}).live_push is expected


def test_bad_live_push_says_what_is_allowed():
    with pytest.raises(ValidationError, match="LIVE_PUSH must be on or off, not 'sometimes'"):
        load_settings({"LIVE_PUSH": "sometimes"})


def test_live_route_caps_and_secret(monkeypatch):
    settings = load_settings()
    assert (settings.live_sockets_per_client, settings.live_sockets_total, settings.live_secret) == (40, 2000, None)
    monkeypatch.setenv("LIVE_SOCKETS_PER_CLIENT", "3")
    assert load_settings({"LIVE_SOCKETS_TOTAL": 10}).live_sockets_total == 10
    assert load_settings().live_sockets_per_client == 3
    for name in ("LIVE_SOCKETS_PER_CLIENT", "LIVE_SOCKETS_TOTAL"):
        with pytest.raises(ValidationError, match=name):
            load_settings({name: "0"})
    auth = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "live-secret-never-shown",
            "client_id": "c", "client_secret": "s", "server_metadata_url": "http://127.0.0.1:9400/.well-known/x"}
    settings = load_settings({"auth": auth})
    assert settings.live_secret == "live-secret-never-shown"  # login mode: the live route's tickets are signed with it
    assert "live-secret-never-shown" not in repr(settings)
    assert load_settings({"cookie_secret": "top-level, not [auth]"}).live_secret is None


def test_rename_channel_and_search_limits_default_on_and_zero_turns_them_off():
    settings = load_settings()
    assert (settings.renames_per_hour, settings.channels_per_hour, settings.searches_per_minute) == (10, 10, 30)
    off = load_settings({"RENAMES_PER_HOUR": "0", "CHANNELS_PER_HOUR": "0", "SEARCHES_PER_MINUTE": "0"})
    assert (off.limits.renames_per_hour, off.limits.channels_per_hour, off.limits.searches_per_minute) == (0, 0, 0)
    assert load_settings({"SEARCHES_PER_MINUTE": "5"}).limits.searches_per_minute == 5
    with pytest.raises(ValidationError, match="CHANNELS_PER_HOUR must be a whole number between 0 and 10000"):
        load_settings({"CHANNELS_PER_HOUR": "lots"})


def test_actions_limit_defaults_on_and_zero_turns_it_off():
    assert load_settings().limits.actions_per_minute == 30
    assert load_settings({"ACTIONS_PER_MINUTE": "0"}).limits.actions_per_minute == 0
    with pytest.raises(ValidationError, match="ACTIONS_PER_MINUTE must be a whole number between 0 and 10000"):
        load_settings({"ACTIONS_PER_MINUTE": "many"})
