"""Channel Chat's entry: `streamlit run app.py` serves the pages (views/main.py) and the live route."""
import streamlit as st
from starlette.routing import WebSocketRoute

from views.route import LIVE_PATH, live_route

app = st.App("views/main.py", routes=[WebSocketRoute(LIVE_PATH, live_route)])
