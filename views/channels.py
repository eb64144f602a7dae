"""Channels: create one (public or private), a private channel's members (invite, remove, leave), activity, and each
channel's reply policy, persona, model and look-back."""
import streamlit as st

from core import chat, membership
from core.errors import ChatError
from views.common import (
    current_user,
    escape_markdown,
    get_db,
    get_settings,
    is_admin,
    show_error,
)

POLICY_LABELS = {"every": "Every message (as the original)", "mention": "Only when someone writes @ai", "off": "Never"}

db = get_db()
# Anyone may create a channel; in login mode only admins choose or change when the AI answers and its persona
# (core.chat.update_channel checks it too: the page only hides what it would refuse).
may_set_ai = not get_settings().login or is_admin()
me = current_user(db)
st.title("Channels")
st.subheader("New channel")

with st.form("create_channel", clear_on_submit=True):
    name = st.text_input("Name", placeholder="general")
    private = st.toggle("Private: members only", key="create_private",
                        help="Only its members read and write it; members invite others below.")
    policy = "every"
    if may_set_ai:
        policy = st.radio("AI replies to", list(POLICY_LABELS), format_func=POLICY_LABELS.get, horizontal=True)
    if st.form_submit_button("Create channel"):
        try:
            if private:
                if me is None:
                    raise ChatError("Pick or create a user first: a private channel starts with its creator.")
                channel_id = membership.create_private_channel(db, me.id, name, limits=get_settings().limits)
                if policy != "every":
                    chat.update_channel(db, channel_id, reply_policy=policy, by=me.id, admin=may_set_ai)
            else:
                channel_id = chat.create_channel(db, name, reply_policy=policy, by=me.id if me else None,
                                                limits=get_settings().limits)
        except ChatError as error:
            show_error(error)
        else:
            st.success(f"Created channel #{escape_markdown(chat.get_channel(db, channel_id).name)}.")

def members_section() -> None:
    """A private channel's or direct message's people, and the acts this person may try (core decides each)."""
    mine = {c.id: c for c in membership.my_channels(db, me.id if me else None) if c.kind != "public"}
    if is_admin():  # admins remove anyone from any private channel: its name and people, never its messages
        mine.update({c.id: c for c in chat.list_channels(db) if c.kind == "private" and c.id not in mine})
    if not mine:
        return
    st.subheader("Members")
    marks = {"private": "🔒", "direct": "@"}
    chosen = mine[st.selectbox("Private channel or direct message", list(mine), key="members_channel",
                               format_func=lambda i: f"{marks[mine[i].kind]} {mine[i].name}")]
    people = membership.members(db, chosen.id)
    st.dataframe([{"name": p.name, "role": p.role, "joined": p.joined_at} for p in people], hide_index=True,
                 column_config={"joined": st.column_config.DatetimeColumn("Joined (UTC)", format="YYYY-MM-DD HH:mm")})
    inside = {p.user_id for p in people}
    invite, remove, leave = st.columns(3)
    if chosen.kind == "private":
        outside = {u.id: u.name for u in chat.list_users(db) if u.id not in inside}
        with invite.form(f"invite_{chosen.id}", border=False):
            guest = st.selectbox("Invite", list(outside), format_func=outside.get, key=f"invite_who_{chosen.id}",
                                 index=None, placeholder="Someone to add")
            if st.form_submit_button("Invite"):
                act(membership.invite, chosen, guest, "Invited")
        others = {p.user_id: p.name for p in people if me is None or p.user_id != me.id}
        with remove.form(f"remove_{chosen.id}", border=False):
            gone = st.selectbox("Remove", list(others), format_func=others.get, key=f"remove_who_{chosen.id}",
                                index=None, placeholder="Someone to take out")
            if st.form_submit_button("Remove"):
                act(lambda d, by, c, p: membership.remove(d, by, c, p, admin=is_admin()), chosen, gone, "Removed")
    else:
        invite.caption("Nobody joins a direct message later: start a new one with everyone in it (sidebar).")
    if leave.button("Leave", key=f"leave_{chosen.id}", help="You stop reading it at once."):
        act(lambda d, by, c, _: membership.leave(d, by, c), chosen, None, "You left")


def act(verb, channel: chat.Channel, person: int | None, done: str) -> None:
    """Run one membership act; a refusal is shown as core's sentence."""
    try:
        if me is None:
            raise ChatError("Pick or create a user first.")
        if person is None and done != "You left":
            raise ChatError("Pick someone first.")
        verb(db, me.id, channel.id, person)
    except ChatError as error:
        show_error(error)
    else:
        who = "" if person is None else f" {chat.get_user(db, person).name}"
        st.success(f"{done}{escape_markdown(who)}.")


members_section()
if not may_set_ai:
    st.caption(":material/lock: New channels answer every message. Admins (ADMIN_EMAILS) set when the AI answers "
               "and its persona.")
elif channels := membership.my_channels(db, me.id if me else None):  # admins too: no private channel they are not in
    st.subheader("AI settings")
    names = {c.id: f"# {c.name}" for c in channels}
    channel = chat.get_channel(db, st.selectbox("Channel", list(names), format_func=names.get, key="edit_channel"))
    with st.form(f"edit_channel_{channel.id}"):
        policy = st.radio("AI replies to", list(POLICY_LABELS), format_func=POLICY_LABELS.get,
                          index=list(POLICY_LABELS).index(channel.reply_policy), horizontal=True)
        persona = st.text_area("Persona (system prompt)", value=channel.persona or "",
                               placeholder=chat.system_prompt(channel), height=140,
                               help="Leave empty for the default group-chat prompt shown as the placeholder.")
        model = st.text_input("Model", value=channel.model or "", placeholder=get_settings().openai_model,
                              key=f"model_{channel.id}",
                              help="Leave empty for the app's model (OPENAI_MODEL), shown as the placeholder.")
        look_back = st.toggle("Look further back", value=channel.look_back, key=f"look_back_{channel.id}",
                              help="Before answering, add the most relevant older messages of this channel "
                                   "(beyond the 10 recent ones) to what the AI sees.")
        if st.form_submit_button("Save"):
            try:
                chat.update_channel(db, channel.id, reply_policy=policy, persona=persona, model=model or None,
                                    look_back=look_back, by=me.id if me else None, admin=may_set_ai)
            except ChatError as error:
                show_error(error)
            else:
                st.success(f"Saved #{escape_markdown(channel.name)}.")

overview = chat.channel_overview(db, within=membership.readable_channels(db, me.id if me else None))
st.subheader("Your channels")
st.caption(f"{len(overview)} channels")
st.dataframe(
    overview,
    hide_index=True,
    column_config={
        "id": st.column_config.NumberColumn("Id", width="small"),
        "name": st.column_config.TextColumn("Name"),
        "created_at": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
        "reply_policy": st.column_config.TextColumn("AI replies"),
        "persona": st.column_config.TextColumn("Persona", width="large"),
        "model": st.column_config.TextColumn("Model", help="Empty: the app's model (OPENAI_MODEL)"),
        "look_back": st.column_config.CheckboxColumn("Looks further back"),
        "messages": st.column_config.NumberColumn("Messages"),
        "last_activity": st.column_config.DatetimeColumn("Last activity (UTC)", format="YYYY-MM-DD HH:mm"),
    },
)
