"""Bench variant (b): the real chat page, but every tick re-reads DuckDB as if the channel had changed."""
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core import chat  # noqa: E402
from views.sidebar import draw_sidebar  # noqa: E402

if not getattr(chat, "_bench_reread", False):  # patch once per process: no version gate, no cache
    ticks = itertools.count()
    chat.channel_version = lambda db, channel_id: next(ticks)
    chat.list_messages = lambda db, channel_id, limit=10, before_id=None: chat.read_messages_uncached(db, channel_id, limit)
    chat._bench_reread = True

page = st.navigation([st.Page(str(ROOT / "views" / "chat.py"), title="Chat", default=True)])
draw_sidebar()
page.run()
