"""What every page shares: settings, the database and the AI worker (one per server process), the sidebar."""
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
from core.embeddings import Embedder, fallback_reason, provider_for
from core.errors import ChatError, DatabaseDamaged, DatabaseUnavailable, StorageError
from core.store import Database, connect

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 5  # how often a page retries a database server that was unreachable (or a full disk)
LINKED_ID = re.compile(r"[0-9]{1,18}")  # ?channel=3: ASCII digits that fit a BIGINT ("²".isdigit() is true)
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


def _create(kind: str) -> None:
    """Form callback: create a user or channel from the sidebar and select it."""
    name, db = st.session_state.get(f"new_{kind}_name", ""), get_db()
    try:
        if kind == "user":
            new_id = chat.create_user(db, name)
        else:
            me = current_user(db)
            new_id = chat.create_channel(db, name, by=me.id if me else None, limits=get_settings().limits)
    except ChatError as error:
        st.session_state[f"new_{kind}_error"] = str(error)
        return
    st.session_state[f"{kind}_id"] = new_id
    st.session_state[f"new_{kind}_name"] = ""
    st.session_state.pop(f"new_{kind}_error", None)


def _creator(kind: str, label: str) -> None:
    with st.popover(f"New {kind}", use_container_width=True):
        with st.form(f"new_{kind}_form", border=False):
            st.text_input(label, key=f"new_{kind}_name")
            st.form_submit_button(f"Create {kind}", on_click=_create, args=(kind,))
    if error := st.session_state.pop(f"new_{kind}_error", None):
        st.error(error)


def _channel_from_link(channels: list[chat.Channel]) -> None:
    """Let a link like ?channel=3 open a channel (once per session, before the selectbox exists)."""
    if st.session_state.get("_link_read"):
        return
    st.session_state["_link_read"] = True
    wanted = st.query_params.get("channel") or ""
    if LINKED_ID.fullmatch(wanted) and any(c.id == int(wanted) for c in channels):
        st.session_state["channel_id"] = int(wanted)


def _login_page(settings: Settings) -> None:
    """Login mode, nobody logged in: a page with the login button(s), and nothing else runs."""
    st.title("Channel Chat")
    st.write("Log in to read and write. You speak as yourself: your name comes from your account, "
             "and you can change it once you are in.")
    for provider in settings.login_providers:
        label = "Log in" if provider is None else f"Log in with {provider.title()}"
        st.button(label, on_click=st.login, args=() if provider is None else (provider,), type="primary",
                  icon=":material/login:", key=f"login_{provider or 'default'}")
    st.stop()


def _rename() -> None:
    """Form callback: the logged-in person changes their display name (who they are comes from st.user only)."""
    identity = signed_in()
    if identity is None:
        return
    db = get_db()
    try:
        accounts.rename_user(db, accounts.user_for(db, identity).id, st.session_state.get("rename_name", ""),
                             limits=get_settings().limits)
    except ChatError as error:
        st.session_state["rename_error"] = str(error)
        return
    st.session_state.pop("rename_error", None)


def _you_logged_in(db: Database, identity: accounts.Identity, admin: bool) -> None:
    try:
        me = accounts.user_for(db, identity)
    except ChatError as error:
        show_error(error)
        st.stop()
    st.markdown(f"**{escape_markdown(me.name)}**" + (" · :material/shield_person: admin" if admin else ""))
    if identity.email:
        st.caption(escape_markdown(identity.email))
    left, right = st.columns(2)
    with left.popover("Rename", use_container_width=True):
        with st.form("rename_form", border=False):
            st.text_input("Display name", value=me.name, key="rename_name", max_chars=chat.NAME_MAX)
            st.form_submit_button("Save name", on_click=_rename)
    right.button("Log out", on_click=st.logout, use_container_width=True, key="logout")
    if error := st.session_state.pop("rename_error", None):
        st.error(error)


def _you_pick(users: list[chat.User]) -> None:
    """Open mode: pick or create the user this window speaks as."""
    user_names = {u.id: u.name for u in users}
    if st.session_state.get("user_id") not in user_names:
        st.session_state["user_id"] = users[0].id if users else None
    st.selectbox("You are", list(user_names), format_func=user_names.get, key="user_id",
                 placeholder="Create a user first", label_visibility="collapsed")
    _creator("user", "Your name")
    st.caption(":material/lock_open: Open mode: anyone with this link can pick any name and speak as anyone. "
               "To tie people to their accounts, turn on login ([auth] in the secrets; see the README).")


def draw_sidebar() -> None:
    """Who am I, which channel, and whether the AI is on: drawn once by app.py for every page.

    In login mode a visitor who is not logged in gets the login page instead, and the page does not run.
    """
    db = get_db()
    settings = get_settings()
    identity = signed_in() if settings.login else None
    if settings.login and identity is None:
        _login_page(settings)
    st.session_state["directory_shown"] = chat.directory_version(db)  # read first: a change after it is news
    users, channels = ([] if settings.login else chat.list_users(db)), chat.list_channels(db)
    _channel_from_link(channels)
    with st.sidebar:
        st.subheader("You")
        if identity is not None:
            _you_logged_in(db, identity, accounts.is_admin(identity, settings.admin_emails))
        else:
            _you_pick(users)

        st.subheader("Channel")
        channel_names = {c.id: f"# {c.name}" for c in channels}
        if st.session_state.get("channel_id") not in channel_names:
            st.session_state["channel_id"] = channels[0].id if channels else None
        st.selectbox("Channel", list(channel_names), format_func=channel_names.get, key="channel_id",
                     placeholder="Create a channel first", label_visibility="collapsed")
        _creator("channel", "Channel name")
        if st.session_state.get("channel_id") is not None:
            st.query_params["channel"] = str(st.session_state["channel_id"])

        st.divider()
        get_embedder()
        status = get_responder().status()
        if status["enabled"]:
            st.caption(f":material/bolt: AI replies on · {status['model']} · {status['workers']} workers")
        else:
            st.caption(f":material/power_off: {status['reason']}")
        if fell_back := fallback_reason(db):  # the AI server has no embeddings
            st.caption(f":material/search_off: {fell_back}")
