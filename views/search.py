"""Search in the chat page: a box, ranked results with the matching words marked, and a result in its context."""
from __future__ import annotations

import re

import streamlit as st

from core import embeddings, render, search
from core.chat import Channel
from core.errors import ChatError
from core.store import Database
from views.common import current_user, escape_markdown, get_settings, local_time

PAGE = 10  # results per page
SCOPES = ("This channel", "All channels")  # all: all that the reader may read (core.membership)
SPACES = re.compile(r"\s+")  # a snippet is one line: line breaks would start Markdown blocks


def inert(text: str) -> str:
    """Text drawn exactly as written: Markdown specials escaped, line breaks as spaces (HTML is never allowed)."""
    return escape_markdown(SPACES.sub(" ", text))


def marked(text: str, spans) -> str:
    """The snippet with its matched words on a highlight, everything else inert."""
    parts, at = [], 0
    for start, end in spans:
        parts.append(inert(text[at:start]))
        if text[start:end].strip():
            parts.append(f":orange-background[**{inert(text[start:end])}**]")
        at = end
    parts.append(inert(text[at:]))
    return "".join(parts)


def _open(hit: search.Hit) -> None:
    """Button callback: show the result among its neighbours, in its channel."""
    st.session_state["channel_id"] = hit.channel_id
    st.session_state["search_opened"] = hit.message_id


def _turn(step: int) -> None:
    st.session_state["search_page"] = max(0, st.session_state.get("search_page", 0) + step)


def _reset_page() -> None:
    st.session_state["search_page"] = 0
    st.session_state.pop("search_opened", None)


def _draw_hit(hit: search.Hit, index: int) -> None:
    with st.container(border=True):
        author = "AI" if hit.is_ai else hit.author_name
        how = {"keyword": "words", "semantic": "meaning", "both": "words and meaning"}[hit.matched_by]
        st.caption(f"**\\#{inert(hit.channel_name)}** · {inert(author)} · {local_time(hit.created_at)} · matched by {how}")
        snippet, spans = hit.snippet()
        st.markdown(marked(snippet, spans))
        st.button("Open in channel", key=f"search_open_{index}", on_click=_open, args=(hit,),
                  icon=":material/open_in_new:")


def _draw_context(db: Database, message_id: int, reader) -> None:
    try:
        around = search.messages_around(db, message_id, reader=reader)
    except ChatError as error:
        st.error(str(error))
        return
    st.caption("The result among the messages around it:")
    for message in around:
        name = "AI" if message.is_ai else message.author_name or "Unknown user"
        with st.container(border=message.id == message_id):
            st.caption(f"**{inert(name)}** · {local_time(message.created_at)}"
                       + (" · :orange-background[result]" if message.id == message_id else ""))
            if message.content:  # drawn as the message list draws it: rendered once on the server, sanitized
                st.html(render.message_html(message.content, get_settings().image_hosts))
            else:
                st.caption("Message deleted" if message.deleted_at else "…")
    st.button("Back to results", key="search_back", on_click=st.session_state.pop, args=("search_opened", None))


def search_panel(db: Database, channel: Channel, reader=None) -> None:
    """The chat page's search: this channel or all (all that ``reader`` may read), paged, ranked; a result opens
    among its neighbours."""
    state = st.session_state
    with st.expander("Search messages", icon=":material/search:", expanded=bool(state.get("search_query"))):
        left, right = st.columns([3, 2])
        query = left.text_input("Search", key="search_query", placeholder="words or a phrase",
                                label_visibility="collapsed", on_change=_reset_page)
        scope = right.radio("Where", SCOPES, key="search_scope", horizontal=True,
                            label_visibility="collapsed", on_change=_reset_page)
        status = embeddings.status(db)
        if status["semantic"]:
            st.caption(":material/psychology: Words and meaning (semantic search on).")
        elif status["provider"]:
            st.caption(f":material/hourglass_top: Words only while {status['backlog']:,} messages are indexed for meaning.")
        if not query:
            return
        if state.get("search_opened"):
            _draw_context(db, state["search_opened"], reader)
            return
        page = state.get("search_page", 0)
        try:
            me = current_user(db)
            hits = search.search_messages(db, query, channel_id=channel.id if scope == SCOPES[0] else None,
                                          limit=PAGE + 1, offset=page * PAGE, by=me.id if me else None,
                                          limits=get_settings().limits, reader=reader)
        except ChatError as error:
            st.warning(str(error), icon=":material/info:")
            return
        if not hits and page == 0:
            st.caption("No messages match.")
            return
        for index, hit in enumerate(hits[:PAGE]):
            _draw_hit(hit, index)
        back, info, forward = st.columns([1, 2, 1])
        back.button("Previous", key="search_prev", on_click=_turn, args=(-1,), disabled=page == 0)
        info.caption(f"Page {page + 1}")
        forward.button("Next", key="search_next", on_click=_turn, args=(1,), disabled=len(hits) <= PAGE)
