"""Channel Chat: route to the pages and draw the shared sidebar."""
import streamlit as st

from views.common import draw_sidebar, frame

st.set_page_config(page_title="Channel Chat", page_icon=":material/forum:", layout="wide")
page = st.navigation(
    [
        st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("views/users.py", title="Users", icon=":material/group:"),
        st.Page("views/channels.py", title="Channels", icon=":material/tag:"),
        st.Page("views/tables.py", title="Tables", icon=":material/table:"),
    ]
)
with frame():  # an error that escapes the sidebar or the page is shown as a sentence
    draw_sidebar()
    page.run()
