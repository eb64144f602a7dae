"""Bench variant (d): the chat page as it was before the message list, kept to measure against.

Every change reruns the chat fragment in every open window (the stamp listener of views/live.py sets
its trigger), and the fragment draws each message with st.chat_message; the sender's own line waits
for that run. Messages are rendered by core/render.py as the list's are, so only the delivery differs.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core import chat, render  # noqa: E402
from core.errors import ChatError  # noqa: E402
from views import live  # noqa: E402
from views.common import current_channel, current_user, get_db, get_settings  # noqa: E402
from views.sidebar import draw_sidebar  # noqa: E402


def page() -> None:
    db, settings = get_db(), get_settings()
    user, channel = current_user(db), current_channel(db)
    if channel is None or user is None:
        st.stop()

    def send(key: str) -> None:
        if text := st.session_state.get(key):
            try:
                chat.send_message(db, channel.id, user.id, text, limits=settings.limits)
            except ChatError as error:
                st.session_state["bench_error"] = str(error)

    st.chat_input("Message", key="bench_draft", submit_mode="disable", on_submit=send, args=("bench_draft",))
    live.guard_chat_input()

    @st.fragment(run_every=settings.refresh_seconds)
    def messages() -> None:
        version = chat.channel_version(db, channel.id)
        live.follow(db, settings, channel.id, version)
        for message in reversed(chat.list_messages(db, channel.id)):
            with st.chat_message("assistant" if message.is_ai else "user"):
                st.caption(f"{'AI' if message.is_ai else message.author_name}")
                if message.content:
                    st.html(render.message_html(message.content, settings.image_hosts))

    messages()


draw_sidebar()
st.navigation([st.Page(page, title="Chat", default=True)]).run()
