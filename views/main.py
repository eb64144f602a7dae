"""Channel Chat: route to the pages and draw the shared sidebar (app.py serves this script)."""
import streamlit as st

from views import live
from views.common import frame, get_db, get_settings
from views.sidebar import draw_sidebar

st.set_page_config(page_title="Channel Chat", page_icon=":material/forum:", layout="wide")
chat_page = st.Page("chat.py", title="Chat", icon=":material/chat:", default=True)
page = st.navigation(
    [
        chat_page,
        st.Page("users.py", title="Users", icon=":material/group:"),
        st.Page("channels.py", title="Channels", icon=":material/tag:"),
        st.Page("tables.py", title="Tables", icon=":material/table:"),
    ]
)
with frame():  # an error that escapes the sidebar or the page is shown as a sentence
    draw_sidebar()
    if page is not chat_page:  # the chat page's live fragment follows the sidebar's lists itself
        with st.sidebar:
            live.follow_directory(get_db(), get_settings())
    page.run()
