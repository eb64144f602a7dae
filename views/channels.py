"""Channels: create one, see activity, set each channel's reply policy, persona, model and look-back."""
import streamlit as st

from core import chat
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
    policy = "every"
    if may_set_ai:
        policy = st.radio("AI replies to", list(POLICY_LABELS), format_func=POLICY_LABELS.get, horizontal=True)
    if st.form_submit_button("Create channel"):
        try:
            channel_id = chat.create_channel(db, name, reply_policy=policy, by=me.id if me else None,
                                            limits=get_settings().limits)
        except ChatError as error:
            show_error(error)
        else:
            st.success(f"Created channel #{escape_markdown(chat.get_channel(db, channel_id).name)}.")

if not may_set_ai:
    st.caption(":material/lock: New channels answer every message. Admins (ADMIN_EMAILS) set when the AI answers "
               "and its persona.")
elif channels := chat.list_channels(db):
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

overview = chat.channel_overview(db)
st.subheader("All channels")
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
