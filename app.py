"""Channel Chat's entry: `streamlit run app.py` serves the pages (views/main.py), the live route and the files route."""
import streamlit as st
from starlette.routing import Route, WebSocketRoute

from views.files import FILES_PATH, files_route
from views.route import LIVE_PATH, live_route

app = st.App("views/main.py", routes=[WebSocketRoute(LIVE_PATH, live_route), Route(FILES_PATH, files_route)])
