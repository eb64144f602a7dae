"""Bench variant (d)'s entry: the page before the message list (chat_fragment_page.py) with the app's /live route."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.routing import WebSocketRoute  # noqa: E402

from views.route import LIVE_PATH, live_route  # noqa: E402

app = st.App(str(Path(__file__).with_name("chat_fragment_page.py")), routes=[WebSocketRoute(LIVE_PATH, live_route)])
