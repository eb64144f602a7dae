"""What every page shares: settings, the database and the AI worker (one per server process), who is asking."""
from __future__ import annotations

import atexit
import functools
import logging
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from streamlit_autorefresh import st_autorefresh

from core import accounts, chat
from core.ai import Responder
from core.config import Settings, load_settings
from core.embeddings import Embedder, provider_for
from core.errors import ChatError, DatabaseDamaged, DatabaseUnavailable, StorageError
from core.store import Database, connect

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 5  # how often a page retries a database server that was unreachable (or a full disk)
# Everything Streamlit's Markdown could read as markup, incl. $ math and :emoji: / :color[...] directives.
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<&$:=^\"'])")


def get_settings() -> Settings:
    """Settings from the environment, with st.secrets (if any) taking precedence; a bad one stops the page readably."""
    try:
        secrets = {key: st.secrets[key] for key in st.secrets}
    except FileNotFoundError as error:  # StreamlitSecretNotFoundError is one too
        if getattr(error, "error_id", None) in (None, "no-secrets-found"):
            secrets = {}  # no secrets file: the environment alone
        else:  # a secrets file that cannot be read: say where, never its text (it holds secrets)
            log.warning("could not read the secrets (%s)", error.error_id)
            why = "it is not valid TOML" if error.error_id == "failed-parsing-secrets-file" else "its path cannot be read"
            st.error(f"Cannot read .streamlit/secrets.toml: {why}. Fix it or remove it, then reload.",
                     icon=":material/settings:")
            st.stop()
    try:
        return load_settings(secrets)
    except ChatError as error:
        st.error(f"A setting needs fixing: {error}", icon=":material/settings:")
        st.stop()


@contextmanager
def frame() -> Iterator[None]:
    """Around the sidebar and the page (app.py): a ChatError that escapes them is a sentence, never a traceback.

    A storage fault (a full disk, a file moved away, a database server that is down) also reloads the
    page every RECONNECT_SECONDS, so it comes back by itself once the fault is mended.
    """
    try:
        yield
    except ChatError as error:
        show_error(error)
        if isinstance(error, (StorageError, DatabaseUnavailable, DatabaseDamaged)):
            st_autorefresh(interval=int(RECONNECT_SECONDS * 1000), key="fault_reload")


@st.cache_resource(show_spinner=False, on_release=lambda db: db.close())
def _database(path: str) -> Database:
    db = connect(path)
    atexit.register(db.close)
    return db


@st.cache_resource(show_spinner=False, max_entries=1, on_release=lambda responder: responder.stop())
def _responder(path: str, settings: Settings) -> Responder:
    responder = Responder(_database(path), settings)
    responder.start()
    atexit.register(responder.stop)
    return responder


@st.cache_resource(show_spinner=False, max_entries=1, on_release=lambda embedder: embedder.stop())
def _embedder(path: str, settings: Settings) -> Embedder:
    embedder = Embedder(_database(path), provider_for(settings))
    embedder.start()
    atexit.register(embedder.stop)
    return embedder


def get_embedder() -> Embedder:
    """The process's background embedder (search's vectors), started on first use."""
    settings = get_settings()
    get_db()
    return _embedder(settings.db_path, settings)


def open_db() -> Database:
    """The process's one database, opened on first use (raises ChatError when it cannot be): for the live route."""
    return _database(get_settings().db_path)


def get_db() -> Database:
    """The process's one database; a page that cannot open it shows why and stops."""
    settings = get_settings()
    try:
        return _database(settings.db_path)
    except DatabaseUnavailable as error:  # a database server that is down: say so, and try again shortly
        st.error(str(error), icon=":material/cloud_off:")
        st_autorefresh(interval=int(RECONNECT_SECONDS * 1000), key="db_reconnect")
        st.stop()
    except ChatError as error:
        st.error(str(error))
        st.stop()


def get_responder() -> Responder:
    """The process's AI worker pool, started on first use (restarted when its settings change)."""
    settings = get_settings()
    get_db()
    return _responder(settings.db_path, settings)


_session_locks = threading.Lock()


def session_scratch(name: str) -> dict:
    """A dict of this browser session's own, holding a "lock", for state written along with a database write.

    Two script threads can serve one session at once (with runner.fastReruns a new run starts while the
    stopped one may still be in a widget callback), and every st.session_state access is a point where a
    stopped run ends. Changing this dict is not: what must not be lost after a write goes here.
    """
    with _session_locks:
        if name not in st.session_state:
            st.session_state[name] = {"lock": threading.Lock()}
        return st.session_state[name]


def guarded(draw: Callable[..., None]) -> Callable[..., None]:
    """For a live fragment: a ChatError on a tick (a full disk, a server that is down) is drawn in its place."""

    @functools.wraps(draw)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            draw(*args, **kwargs)
        except ChatError as error:
            show_error(error)

    return run


def show_error(error: ChatError) -> None:
    st.error(str(error), icon=":material/error:")


def escape_markdown(text: str) -> str:
    """Show a name literally where Streamlit would read Markdown."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", text)


def local_time(moment: datetime | None) -> str:
    """A stored naive-UTC time in the browser's time zone, as 'HH:MM' today or 'd Mon HH:MM'."""
    if moment is None:
        return ""
    try:
        zone = ZoneInfo(st.context.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    local = moment.replace(tzinfo=timezone.utc).astimezone(zone)
    today = datetime.now(zone).date()
    return local.strftime("%H:%M") if local.date() == today else local.strftime("%d %b %H:%M")


def _chosen(db: Database, key: str, get):
    """The user or channel this browser session has chosen, if it still exists."""
    chosen = st.session_state.get(key)
    try:
        return get(db, chosen) if chosen is not None else None
    except ChatError:
        return None


def signed_in() -> accounts.Identity | None:
    """Login mode: who is logged in, from st.user (claims Streamlit verified and keeps in a signed cookie)."""
    try:
        return accounts.identity_from_claims(st.user.to_dict())
    except ChatError as error:
        st.error(str(error))
        st.button("Log out", on_click=st.logout, key="bad_login_logout")
        st.stop()


def current_user(db: Database) -> chat.User | None:
    """The user this browser session speaks as: in login mode the logged-in person, never a choice in the session."""
    if not get_settings().login:
        return _chosen(db, "user_id", chat.get_user)
    identity = signed_in()
    if identity is None:
        return None
    try:
        return accounts.user_for(db, identity)
    except ChatError as error:
        show_error(error)
        return None


def is_admin() -> bool:
    """Login mode: whether the logged-in person is named in ADMIN_EMAILS (open mode has no roles: see the Tables page)."""
    settings = get_settings()
    return settings.login and accounts.is_admin(signed_in(), settings.admin_emails)


def current_channel(db: Database) -> chat.Channel | None:
    """The channel this browser session looks at."""
    return _chosen(db, "channel_id", chat.get_channel)
