"""Settings from environment variables, overridden by a mapping (the app passes st.secrets)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from core.db import is_postgres_url
from core.errors import ValidationError

DEFAULT_DB = "data/chat.duckdb"
DEFAULT_MODEL = "gpt-4o"  # the original's model


@dataclass(frozen=True)
class Settings:
    db_path: str = field(default=DEFAULT_DB, repr=False)  # a Postgres URL may carry a password
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_MODEL
    ai_workers: int = 4
    refresh_seconds: float = 15.0  # the fallback check; pushed changes arrive at once
    live_push: bool = True
    ai_timeout: float = 60.0
    ai_lease_seconds: float = 30.0
    admin_password: str | None = field(default=None, repr=False)

    @property
    def ai_enabled(self) -> bool:
        return bool(self.openai_api_key)


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    value = str(raw).strip()
    return value or None


def _number(name: str, raw: Any, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise ValidationError(f"{name} must be a {kind.__name__} between {low} and {high}, not {raw!r}.") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, not {raw!r}.")
    return value


def _switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ValidationError(f"{name} must be on or off, not {raw!r}.")
    return value in ("on", "true", "1", "yes")


def _connection_url(overrides: Mapping[str, Any] | None) -> str | None:
    """``url`` of a ``[connections.chat]`` secrets section (Streamlit's convention for connections), if any."""
    try:
        return _text(overrides["connections"]["chat"]["url"]) if overrides else None
    except (KeyError, TypeError):
        return None


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read settings from the environment; keys in ``overrides`` win."""
    source: dict[str, Any] = {k: v for k, v in os.environ.items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, (str, int, float)):  # skip secrets sections such as [connections]
            source[key] = value

    def get(name: str) -> Any:
        return _text(source.get(name))

    db_path = get("CHAT_DB") or _connection_url(overrides) or DEFAULT_DB
    if db_path != ":memory:" and not is_postgres_url(db_path):
        folder = os.path.dirname(os.path.abspath(db_path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise ValidationError(f"CHAT_DB: cannot create the folder {folder!r} ({error.strerror}).") from None

    return Settings(
        db_path=db_path,
        openai_api_key=get("OPENAI_API_KEY"),
        openai_base_url=get("OPENAI_BASE_URL"),
        openai_model=get("OPENAI_MODEL") or DEFAULT_MODEL,
        ai_workers=_number("AI_WORKERS", get("AI_WORKERS") or 4, int, 1, 64),
        refresh_seconds=_number("REFRESH_SECONDS", get("REFRESH_SECONDS") or 15.0, float, 0.2, 60.0),
        live_push=_switch("LIVE_PUSH", get("LIVE_PUSH") or "on"),
        ai_timeout=_number("AI_TIMEOUT_SECONDS", get("AI_TIMEOUT_SECONDS") or 60.0, float, 1.0, 600.0),
        ai_lease_seconds=_number("AI_LEASE_SECONDS", get("AI_LEASE_SECONDS") or 30.0, float, 1.0, 3600.0),
        admin_password=get("ADMIN_PASSWORD"),
    )
