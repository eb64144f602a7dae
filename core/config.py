"""Settings from environment variables, overridden by a mapping (the app passes st.secrets)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from core.errors import ValidationError
from core.limits import Limits
from core.store import is_postgres_url

DEFAULT_DB = "data/chat.duckdb"
DEFAULT_MODEL = "gpt-4o"  # the original's model
DEFAULT_MESSAGES_PER_MINUTE = 12  # a fast typist's pace in a busy chat; a script posting in a loop is stopped
DEFAULT_AI_REPLIES_PER_HOUR = 60  # one a minute per person, all hour: lively, yet a bounded bill
DEFAULT_RENAMES_PER_HOUR = 10  # fixing a typo takes one or two; each rename reruns every page showing the person
DEFAULT_CHANNELS_PER_HOUR = 10  # a team setting up its rooms; each channel is a line in everyone's sidebar
DEFAULT_SEARCHES_PER_MINUTE = 30  # one every 2 s, all minute; each may send its query to the embeddings API
DEFAULT_ATTACHMENT_MAX_MB = 10  # a phone photo or a spreadsheet; a video belongs elsewhere
DEFAULT_ATTACHMENT_MB_PER_DAY = 200  # per person: twenty large files a day, and a full disk takes many people
DEFAULT_ACTIONS_PER_MINUTE = 30  # edits, deletes and reactions: a burst of fixes and +1s; each repaints every window
DEFAULT_AI_TOKENS_PER_DAY = 500_000  # for the whole app: about $1.25-5 a day of gpt-4o (input-heavy to output-heavy)
AUTH_KEYS = ("redirect_uri", "cookie_secret")  # what Streamlit's [auth] needs besides a provider
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
NOT_PROVIDERS = ("client_kwargs",)  # tables inside [auth] that configure a provider rather than name one
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"  # OpenAI's cheapest; "wordllama" keeps embeddings local
# A crashed replica's replies are taken over between 2/3 and 4/3 of the lease after it died (the heartbeat and the
# sweep run every third of it: core/ai/worker.py), so 10 s keeps kill -> requeue under 15 s; the cost is one
# lease-renewal UPDATE per replica every 3.3 s while it holds replies (bench/failover.py).
DEFAULT_AI_LEASE_SECONDS = 10.0


@dataclass(frozen=True)
class Settings:
    db_path: str = field(default=DEFAULT_DB, repr=False)  # a Postgres URL may carry a password
    openai_api_key: str | None = field(default=None, repr=False)  # never in a log line or a page
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_MODEL
    ai_workers: int = 4
    refresh_seconds: float = 15.0  # the fallback check; pushed changes arrive at once
    live_push: bool = True
    ai_timeout: float = 60.0
    ai_lease_seconds: float = DEFAULT_AI_LEASE_SECONDS
    ai_context_tokens: int = 16000  # what one request may carry (estimated): see core/context.py
    ai_tool_calls_per_round: int = 4  # tool calls one request's answer may run; more are answered "not run"
    ai_tool_calls_per_reply: int = 8  # tool calls over all of a reply's rounds
    admin_password: str | None = field(default=None, repr=False)
    login: bool = False  # an [auth] section in the secrets: everyone logs in (st.login) and speaks as themself
    login_providers: tuple[str | None, ...] = (None,)  # [auth.<name>] sections; None is [auth]'s own provider
    admin_emails: frozenset[str] = frozenset()  # in login mode, who may use the SQL console and exports
    messages_per_minute: int = DEFAULT_MESSAGES_PER_MINUTE
    ai_replies_per_hour: int = DEFAULT_AI_REPLIES_PER_HOUR
    ai_tokens_per_day: int = DEFAULT_AI_TOKENS_PER_DAY
    renames_per_hour: int = DEFAULT_RENAMES_PER_HOUR
    channels_per_hour: int = DEFAULT_CHANNELS_PER_HOUR
    searches_per_minute: int = DEFAULT_SEARCHES_PER_MINUTE
    attachment_max_mb: int = DEFAULT_ATTACHMENT_MAX_MB  # per file (the chat box is told the same)
    attachment_mb_per_day: int = DEFAULT_ATTACHMENT_MB_PER_DAY  # per person, over the last 24 hours
    actions_per_minute: int = DEFAULT_ACTIONS_PER_MINUTE
    console_seconds: float = 5.0  # a console query's time cap, its process's start-up included
    console_memory_mb: int = 256  # what a console query may use on top of its process's ~90 MB
    console_role: str | None = None  # Postgres: the read-only role console queries run as (SET ROLE); None: the app's
    image_hosts: frozenset[str] = frozenset()  # hosts whose images messages may show; others are shown as links
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    # The live route (views/live.py): sockets one client address may hold (a person with a dozen tabs; an office
    # behind one NAT address shares it), sockets in all (each is a task and a subscription in this process), and
    # the key that signs its tickets in login mode ([auth] cookie_secret; open mode needs none).
    live_sockets_per_client: int = 40
    live_sockets_total: int = 2000
    live_secret: str | None = field(default=None, repr=False)

    @property
    def ai_enabled(self) -> bool:
        return bool(self.openai_api_key)

    @property
    def limits(self) -> Limits:
        return Limits(self.messages_per_minute, self.ai_replies_per_hour, self.ai_tokens_per_day,
                      renames_per_hour=self.renames_per_hour, channels_per_hour=self.channels_per_hour,
                      searches_per_minute=self.searches_per_minute, attachment_mb_per_day=self.attachment_mb_per_day,
                      actions_per_minute=self.actions_per_minute)


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    value = str(raw).strip()
    return value or None


def _words(raw: str | None, lower: bool = False) -> list[str]:
    """A comma- or space-separated list, e.g. 'a.example, b.example'."""
    words = [word for word in (raw or "").replace(",", " ").split() if word]
    return [word.lower() for word in words] if lower else words


KINDS = {int: "a whole number", float: "a number"}  # what a person is told a setting must be


def _shown(bound: float) -> str:
    """A limit as a person types it: 60, not 60.0."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _number(name: str, raw: Any, kind: type, low: float, high: float) -> Any:
    between = f"between {_shown(low)} and {_shown(high)}"
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise ValidationError(f"{name} must be {KINDS[kind]} {between}, not {raw!r}.") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be {between}, not {raw!r}.")
    return value


def _connection_url(overrides: Mapping[str, Any] | None) -> str | None:
    """``url`` of a ``[connections.chat]`` secrets section (Streamlit's convention for connections), if any."""
    try:
        return _text(overrides["connections"]["chat"]["url"]) if overrides else None
    except (KeyError, TypeError):
        return None


def _base_url(raw: str | None) -> str | None:
    """OPENAI_BASE_URL as given, if it is an http(s) URL the SDK can use (named without any password if not)."""
    if raw is None:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:  # a broken [IPv6] host
        parts = None
    try:
        usable = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and (
            parts.port or 0) >= 0
    except ValueError:  # a port that is not a number
        usable = False
    if not usable:
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if parts else raw.rpartition("@")[2]
        raise ValidationError(
            f"OPENAI_BASE_URL must be an http(s) address such as https://api.openai.com/v1, not {shown!r}."
        )
    return raw


ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # a plain Postgres role name: it goes into libpq's options unquoted


def _role(raw: str | None) -> str | None:
    """CONSOLE_ROLE as given, if it is a plain lower-case Postgres role name (letters, digits, _; at most 63)."""
    if raw is None:
        return None
    if not ROLE.fullmatch(raw):
        raise ValidationError(f"CONSOLE_ROLE must be a plain role name such as chat_reader, not {raw!r}.")
    return raw


def _switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ValidationError(f"{name} must be on or off, not {raw!r}.")
    return value in ("on", "true", "1", "yes")


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

    login, providers = _auth(overrides)
    return Settings(
        db_path=db_path,
        openai_api_key=get("OPENAI_API_KEY"),
        openai_base_url=_base_url(get("OPENAI_BASE_URL")),
        openai_model=get("OPENAI_MODEL") or DEFAULT_MODEL,
        ai_workers=_number("AI_WORKERS", get("AI_WORKERS") or 4, int, 1, 64),
        refresh_seconds=_number("REFRESH_SECONDS", get("REFRESH_SECONDS") or 15.0, float, 0.2, 60.0),
        live_push=_switch("LIVE_PUSH", get("LIVE_PUSH") or "on"),
        ai_timeout=_number("AI_TIMEOUT_SECONDS", get("AI_TIMEOUT_SECONDS") or 60.0, float, 1.0, 600.0),
        ai_lease_seconds=_number("AI_LEASE_SECONDS", get("AI_LEASE_SECONDS") or DEFAULT_AI_LEASE_SECONDS, float, 1.0, 3600.0),
        ai_context_tokens=_number("AI_CONTEXT_TOKENS", get("AI_CONTEXT_TOKENS") or 16000, int, 1000, 2_000_000),
        ai_tool_calls_per_round=_number("AI_TOOL_CALLS_PER_ROUND", get("AI_TOOL_CALLS_PER_ROUND") or 4, int, 1, 64),
        ai_tool_calls_per_reply=_number("AI_TOOL_CALLS_PER_REPLY", get("AI_TOOL_CALLS_PER_REPLY") or 8, int, 1, 256),
        admin_password=get("ADMIN_PASSWORD"),
        console_seconds=_number("CONSOLE_TIMEOUT_SECONDS", get("CONSOLE_TIMEOUT_SECONDS") or 5.0, float, 1.0, 120.0),
        console_memory_mb=_number("CONSOLE_MEMORY_MB", get("CONSOLE_MEMORY_MB") or 256, int, 32, 8192),
        console_role=_role(get("CONSOLE_ROLE")),
        image_hosts=frozenset(_words(get("IMAGE_HOSTS"), lower=True)),
        login=login,
        login_providers=providers,
        admin_emails=frozenset(_words(get("ADMIN_EMAILS"), lower=True)),
        messages_per_minute=_number("MESSAGES_PER_MINUTE", get("MESSAGES_PER_MINUTE") or DEFAULT_MESSAGES_PER_MINUTE,
                                    int, 0, 10_000),
        ai_replies_per_hour=_number("AI_REPLIES_PER_HOUR", get("AI_REPLIES_PER_HOUR") or DEFAULT_AI_REPLIES_PER_HOUR,
                                    int, 0, 100_000),
        ai_tokens_per_day=_number("AI_TOKENS_PER_DAY", get("AI_TOKENS_PER_DAY") or DEFAULT_AI_TOKENS_PER_DAY,
                                  int, 0, 10**12),
        renames_per_hour=_number("RENAMES_PER_HOUR", get("RENAMES_PER_HOUR") or DEFAULT_RENAMES_PER_HOUR,
                                 int, 0, 10_000),
        channels_per_hour=_number("CHANNELS_PER_HOUR", get("CHANNELS_PER_HOUR") or DEFAULT_CHANNELS_PER_HOUR,
                                  int, 0, 10_000),
        searches_per_minute=_number("SEARCHES_PER_MINUTE", get("SEARCHES_PER_MINUTE") or DEFAULT_SEARCHES_PER_MINUTE,
                                    int, 0, 10_000),
        attachment_max_mb=_number("ATTACHMENT_MAX_MB", get("ATTACHMENT_MAX_MB") or DEFAULT_ATTACHMENT_MAX_MB, int, 1, 200),
        attachment_mb_per_day=_number("ATTACHMENT_MB_PER_DAY", get("ATTACHMENT_MB_PER_DAY")
                                      or DEFAULT_ATTACHMENT_MB_PER_DAY, int, 0, 1_000_000),
        actions_per_minute=_number("ACTIONS_PER_MINUTE", get("ACTIONS_PER_MINUTE") or DEFAULT_ACTIONS_PER_MINUTE,
                                   int, 0, 10_000),
        embedding_model=get("EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL,
        live_sockets_per_client=_number("LIVE_SOCKETS_PER_CLIENT", get("LIVE_SOCKETS_PER_CLIENT") or 40,
                                        int, 1, 1_000_000),
        live_sockets_total=_number("LIVE_SOCKETS_TOTAL", get("LIVE_SOCKETS_TOTAL") or 2000, int, 1, 1_000_000),
        live_secret=_text(overrides["auth"]["cookie_secret"]) if login and overrides else None,
    )


def _auth(overrides: Mapping[str, Any] | None) -> tuple[bool, tuple[str | None, ...]]:
    """Whether the secrets hold an [auth] section (login mode), and its providers; a readable error if incomplete."""
    auth = (overrides or {}).get("auth")
    if not isinstance(auth, Mapping):
        return False, (None,)
    missing = [key for key in AUTH_KEYS if not _text(auth.get(key))]
    named = tuple(sorted(key for key, value in auth.items() if isinstance(value, Mapping) and key not in NOT_PROVIDERS))
    providers: tuple[str | None, ...] = ((None,) if _text(auth.get("client_id")) else ()) + named
    if not providers:
        missing.append("a provider (client_id, client_secret, server_metadata_url, or an [auth.<name>] section)")
    for name in providers:
        section = auth if name is None else auth[name]
        missing += [f"{'' if name is None else f'auth.{name}.'}{key}" for key in PROVIDER_KEYS if not _text(section.get(key))]
    if missing:
        raise ValidationError(
            f"The [auth] section of the secrets is incomplete: it needs {', '.join(missing)}. "
            "See the README, section Login."
        )
    return True, providers
