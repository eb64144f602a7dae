"""Bench variant (c): the real chat page rerun whole every second by streamlit-autorefresh (run with a
REFRESH_SECONDS far above the bench window so the page's own fragment timer never fires)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit_autorefresh import st_autorefresh  # noqa: E402

from views.sidebar import draw_sidebar  # noqa: E402

st_autorefresh(interval=1000, key="bench_autorefresh")
page = st.navigation([st.Page(str(ROOT / "views" / "chat.py"), title="Chat", default=True)])
draw_sidebar()
page.run()
