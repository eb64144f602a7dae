"""Channel Chat: route to the pages and draw the shared sidebar."""
import streamlit as st

from pages.common import draw_sidebar

st.set_page_config(page_title="Channel Chat", page_icon="💬", layout="wide")
page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon="💬", default=True),
        st.Page("pages/users.py", title="Users", icon="🧑"),
        st.Page("pages/channels.py", title="Channels", icon="#️⃣"),
        st.Page("pages/tables.py", title="Tables", icon="🗄️"),
    ]
)
draw_sidebar()
page.run()
