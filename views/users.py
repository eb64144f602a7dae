"""Users: create one, see everyone with their message counts."""
import streamlit as st

from core import chat
from core.errors import ChatError
from views.common import escape_markdown, get_db, get_settings, show_error

db = get_db()
st.title("Users")

if get_settings().login:
    st.caption("People join by logging in; each changes their own name in the sidebar.")
else:
    with st.form("create_user", clear_on_submit=True):
        name = st.text_input("Name", placeholder="Ada")
        if st.form_submit_button("Create user"):
            try:
                user_id = chat.create_user(db, name)
            except ChatError as error:
                show_error(error)
            else:
                st.success(f"Created user {escape_markdown(chat.get_user(db, user_id).name)}.")

users = chat.user_overview(db)
st.caption(f"{len(users)} users")
st.dataframe(
    users,
    hide_index=True,
    column_config={
        "id": st.column_config.NumberColumn("Id", width="small"),
        "name": st.column_config.TextColumn("Name"),
        "created_at": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
        "messages": st.column_config.NumberColumn("Messages"),
        "last_message_at": st.column_config.DatetimeColumn("Last message (UTC)", format="YYYY-MM-DD HH:mm"),
    },
)
