"""What every page shares: settings, the database and the AI worker (one per server process), the sidebar."""
from __future__ import annotations

import atexit
import logging
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from streamlit_autorefresh import st_autorefresh

from core import chat
from core.ai import Responder
from core.config import Settings, load_settings
from core.db import Database, connect
from core.errors import ChatError, DatabaseUnavailable

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 5  # how often a page retries a database server that was unreachable
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<&])")


def get_settings() -> Settings:
    """Settings from the environment, with st.secrets (if any) taking precedence."""
    try:
        secrets = {key: st.secrets[key] for key in st.secrets}
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        secrets = {}
    return load_settings(secrets)


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


def current_user(db: Database) -> chat.User | None:
    """The user this browser session speaks as."""
    return _chosen(db, "user_id", chat.get_user)


def current_channel(db: Database) -> chat.Channel | None:
    """The channel this browser session looks at."""
    return _chosen(db, "channel_id", chat.get_channel)


def _create(kind: str) -> None:
    """Form callback: create a user or channel from the sidebar and select it."""
    name = st.session_state.get(f"new_{kind}_name", "")
    try:
        new_id = chat.create_user(get_db(), name) if kind == "user" else chat.create_channel(get_db(), name)
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
    wanted = st.query_params.get("channel")
    if wanted and wanted.isdigit() and any(c.id == int(wanted) for c in channels):
        st.session_state["channel_id"] = int(wanted)


def draw_sidebar() -> None:
    """Who am I, which channel, and whether the AI is on: drawn once by app.py for every page."""
    db = get_db()
    st.session_state["directory_shown"] = chat.directory_version(db)  # read first: a change after it is news
    users, channels = chat.list_users(db), chat.list_channels(db)
    _channel_from_link(channels)
    with st.sidebar:
        st.subheader("You")
        user_names = {u.id: u.name for u in users}
        if st.session_state.get("user_id") not in user_names:
            st.session_state["user_id"] = users[0].id if users else None
        st.selectbox("You are", list(user_names), format_func=user_names.get, key="user_id",
                     placeholder="Create a user first", label_visibility="collapsed")
        _creator("user", "Your name")

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
        status = get_responder().status()
        if status["enabled"]:
            st.caption(f":material/bolt: AI replies on · {status['model']} · {status['workers']} workers")
        else:
            st.caption(f":material/power_off: {status['reason']}")
