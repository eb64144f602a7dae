"""The sidebar every page shows: who you are (logged in, or picked in open mode), which channel (yours: public, private,
direct), whether the AI is on."""
from __future__ import annotations

import re

import streamlit as st

from core import accounts, chat, membership
from core.config import Settings
from core.embeddings import fallback_reason
from core.errors import ChatError
from core.store import Database
from views.common import (
    current_user,
    escape_markdown,
    get_db,
    get_embedder,
    get_responder,
    get_settings,
    show_error,
    signed_in,
)

LINKED_ID = re.compile(r"[0-9]{1,18}")  # ?channel=3: ASCII digits that fit a BIGINT ("²".isdigit() is true)
MARKS = {"public": "#", "private": "🔒", "direct": "@"}  # how the list tells the kinds apart
LINK_REFUSED = "link_refused"  # the sentence for a ?channel=N this person cannot read, until drawn


def label(channel: chat.Channel) -> str:
    """A channel as the lists show it: '# general', '🔒 hiring', '@ Bob, Cy' (a direct message, by the others)."""
    return f"{MARKS.get(channel.kind, '#')} {channel.name}"


def _create(kind: str) -> None:
    """Form callback: create a user or channel from the sidebar and select it."""
    name, db = st.session_state.get(f"new_{kind}_name", ""), get_db()
    try:
        if kind == "user":
            new_id = chat.create_user(db, name)
        elif st.session_state.get("new_channel_private"):
            me = current_user(db)
            if me is None:
                raise ChatError("Pick or create a user first: a private channel starts with its creator.")
            new_id = membership.create_private_channel(db, me.id, name, limits=get_settings().limits)
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
            if kind == "channel":
                st.toggle("Private: members only", key="new_channel_private",
                          help="Only the people you invite read it (on the Channels page).")
            st.form_submit_button(f"Create {kind}", on_click=_create, args=(kind,))
    if error := st.session_state.pop(f"new_{kind}_error", None):
        st.error(error)


def _channel_from_link(channels: list[chat.Channel]) -> None:
    """Let a link like ?channel=3 open a channel (once per session, before the selectbox exists); one this person
    cannot read gets a sentence, never the channel."""
    if st.session_state.get("_link_read"):
        return
    st.session_state["_link_read"] = True
    wanted = st.query_params.get("channel") or ""
    if not LINKED_ID.fullmatch(wanted):
        return
    if any(c.id == int(wanted) for c in channels):
        st.session_state["channel_id"] = int(wanted)
    else:
        st.session_state[LINK_REFUSED] = (f"The link names channel {int(wanted)}, which you cannot open: it does not "
                                          "exist, or it is private to its members. Ask one of them to invite you.")


def _open_direct() -> None:
    """Form callback: open (or find) the direct message with the people picked, and select it."""
    db = get_db()
    me = current_user(db)
    try:
        if me is None:
            raise ChatError("Pick or create a user first: a direct message is between people.")
        new_id = membership.open_direct(db, me.id, st.session_state.get("new_direct_people") or [],
                                        limits=get_settings().limits)
    except ChatError as error:
        st.session_state["new_direct_error"] = str(error)
        return
    st.session_state["channel_id"] = new_id
    st.session_state["new_direct_people"] = []


def _direct_creator(db: Database, me: chat.User | None) -> None:
    others = {u.id: u.name for u in chat.list_users(db) if me is None or u.id != me.id}
    with st.popover("New direct message", use_container_width=True):
        with st.form("new_direct_form", border=False):
            st.multiselect("With", list(others), format_func=others.get, key="new_direct_people",
                           max_selections=membership.DIRECT_MAX - 1, placeholder="Pick 1 to 7 people")
            st.form_submit_button("Open direct message", on_click=_open_direct)
    if error := st.session_state.pop("new_direct_error", None):
        st.error(error)


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
    users = [] if settings.login else chat.list_users(db)
    if not settings.login and st.session_state.get("user_id") not in {u.id for u in users}:
        st.session_state["user_id"] = users[0].id if users else None  # the picker's default, known before the lists
    me = current_user(db)  # open mode: the name picked (below, kept in the session); login mode: the login's user
    channels = membership.my_channels(db, me.id if me else None)  # what this person may read, nothing more
    _channel_from_link(channels)
    with st.sidebar:
        st.subheader("You")
        if identity is not None:
            _you_logged_in(db, identity, accounts.is_admin(identity, settings.admin_emails))
        else:
            _you_pick(users)

        st.subheader("Channel")
        channel_names = {c.id: label(c) for c in channels}
        if st.session_state.get("channel_id") not in channel_names:  # also a channel one was just removed from
            st.session_state["channel_id"] = channels[0].id if channels else None
        st.selectbox("Channel", list(channel_names), format_func=channel_names.get, key="channel_id",
                     placeholder="Create a channel first", label_visibility="collapsed")
        if refused := st.session_state.pop(LINK_REFUSED, None):
            st.warning(refused, icon=":material/lock:")
        _creator("channel", "Channel name")
        _direct_creator(db, me)
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
