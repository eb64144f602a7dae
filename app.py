"""Channel Chat: route to the pages and draw the shared sidebar."""
import streamlit as st

from pages.common import draw_sidebar

st.set_page_config(page_title="Channel Chat", page_icon=":material/forum:", layout="wide")
page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/users.py", title="Users", icon=":material/group:"),
        st.Page("pages/channels.py", title="Channels", icon=":material/tag:"),
        st.Page("pages/tables.py", title="Tables", icon=":material/table:"),
    ]
)
draw_sidebar()
page.run()
