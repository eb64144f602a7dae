"""Chat: the channel's recent messages, live, and a box to write in."""
import time

import streamlit as st

from core import chat, render, replies, tools
from core.errors import ChatError
from views import live
from views.common import (current_channel, current_user, escape_markdown, get_db, get_settings, guarded, is_admin,
                          local_time, session_scratch, show_error)
from views.search import search_panel

PAGE = chat.RECENT_LIMIT  # messages per "load older" step, as many as the original lists
TYPING = "▌"  # drawn after a reply that is still being written
SENT = "chat_sent_by_callback"  # this run's message was stored by the chat box's callback
NOT_SENT = "chat_not_sent"  # why the last message could not be stored, until it is drawn
SENDING = "chat_sending"  # this session's lock around a send, and its last stored (channel, user, text, time)
REPEAT_SECONDS = 1.0  # the same text again this soon is one submit the browser sent twice, not a second message

db, settings = get_db(), get_settings()
user, channel = current_user(db), current_channel(db)
# Stop and Retry act on anyone's reply for an admin, and for everyone in open mode (it has no roles);
# otherwise only on the replies one asked for. Core decides; the buttons only follow.
acts_for_all = not settings.login or is_admin()
if channel is None:
    st.info("Create a channel in the sidebar to start chatting.")
    live.follow_directory(db, settings)
    st.stop()


def send(channel_id: int, user_id: int, key: str) -> None:
    """Chat box callback: store the message before the page runs.

    Streamlit stops a running script when a newer full rerun arrives (runner.fastReruns), so a message
    handled in the page body could be dropped before it reached the database. Callbacks run before the
    body; their only stop points are st.session_state accesses, so ``store`` keeps what it must not lose
    after the write out of st.session_state.
    """
    st.session_state[SENT] = True
    prompt = st.session_state.get(key)
    if prompt and not store(channel_id, user_id, prompt) and prompt.strip():
        st.session_state[key] = prompt  # back in the box, to send again


def store(channel_id: int, user_id: int, prompt: str) -> bool:
    """Send; or keep a notice that says the message was not sent and why, and return False.

    A slow browser (seen with Chromium's CPU throttled) can submit one Enter twice: the same text from the
    same window again within REPEAT_SECONDS is taken as that, and stored once.
    """
    sending = session_scratch(SENDING)
    with sending["lock"]:  # the stopped run's callback and the new run's may both be here
        now, last = time.monotonic(), sending.get("last")
        if last and last[:3] == (channel_id, user_id, prompt) and now - last[3] < REPEAT_SECONDS:
            return True
        try:
            chat.send_message(get_db(), channel_id, user_id, prompt, limits=get_settings().limits)
        except ChatError as error:
            st.session_state[NOT_SENT] = f"Your message was not sent. {error}"
            return False
        sending["last"] = (channel_id, user_id, prompt, time.monotonic())  # no stop point since the write
        return True


st.header(f"# {escape_markdown(channel.name)}", divider="gray")
search_panel(db, channel)
if user is None:
    st.info("Create a user in the sidebar to write in this channel.")
else:
    key = f"draft_{channel.id}"
    # "disable": the box stays disabled until the run that carries a message is over, so the next send
    # cannot stop that run — the one path a callback does not cover is a session's first run, whose
    # page has not yet told Streamlit about the callback (a window that outlived a server restart).
    prompt = st.chat_input(f"Message #{channel.name} as {user.name}", key=key, submit_mode="disable",
                           on_submit=send, args=(channel.id, user.id, key))
    live.guard_chat_input()
    sent = st.session_state.pop(SENT, False)
    if prompt and not sent:
        store(channel.id, user.id, prompt)
if notice := st.session_state.get(NOT_SENT):
    show_error(notice)
    del st.session_state[NOT_SENT]  # after drawing: a run stopped mid-way shows it on the next one


def stop(message_id: int) -> None:
    """Stop button callback: errors become a message, not a traceback."""
    try:
        replies.stop_reply(db, message_id, user.id, admin=acts_for_all)
    except ChatError as error:
        st.session_state["chat_error"] = str(error)


def retry(message_id: int) -> None:
    """Retry button callback: a new ask, charged to whoever presses it and held to their limits."""
    try:
        replies.retry_reply(db, message_id, user.id, admin=acts_for_all, limits=settings.limits)
    except ChatError as error:
        st.session_state["chat_error"] = str(error)


def may_act(message: chat.Message) -> bool:
    """Whether this person may stop or retry the reply (asked for it, or acts for all)."""
    return user is not None and (acts_for_all or user.id in replies.asked_by(db, message.id))


def context_used(message: chat.Message) -> list[dict] | None:
    """What was sent to the model for a finished reply, read once per session and kept."""
    seen = st.session_state.setdefault("contexts", {})
    key = (message.id, message.updated_at)
    if key not in seen:
        seen[key] = chat.reply_context(db, message.id)
    return seen[key]


STEP_ICONS = {"tool": ":material/search:", "retrieval": ":material/history:", "budget": ":material/content_cut:",
              "fallback": ":material/info:"}


def step_line(step: dict) -> str:
    """One step of a reply as a line of inert text: what the AI did and how it went."""
    line = escape_markdown(str(step.get("label", "")))
    if step.get("state") == "error":
        line += f" — {escape_markdown(str(step.get('error', '')))}"
    elif step.get("summary"):
        line += f" {escape_markdown(str(step['summary']))}"
    return f"{STEP_ICONS.get(step.get('kind'), ':material/info:')} {line}"


def draw_context(message: chat.Message, context: list[dict] | None) -> None:
    """"Context used": each step with what it returned (tool calls, older messages, cuts), then the request."""
    with st.expander("Context used"):
        for step in tools.steps_of(message):
            st.caption(step_line(step))
            if step.get("kind") == "tool":
                st.text(f"{step.get('tool')}({step.get('arguments', '')})")
            if step.get("output"):
                st.text(step["output"])
        if context:
            st.json(context, expanded=False)


def draw(message: chat.Message) -> None:
    name = "AI" if message.is_ai else message.author_name or "Unknown user"
    # A person's own name gives each speaker an avatar with their initial; the AI gets the preset look.
    with st.chat_message("assistant" if message.is_ai else name, avatar=":material/smart_toy:" if message.is_ai else None):
        st.caption(f"**{escape_markdown(name)}** · {local_time(message.created_at)}")
        if message.is_ai and message.status in replies.OPEN:  # every window sees what the AI is doing
            for step in tools.steps_of(message):
                st.caption(step_line(step))
        if message.status == "pending":
            st.caption("typing …")
        elif message.content:
            st.markdown(render.message_markdown(message.content, settings.image_hosts)
                        + (f" {TYPING}" if message.status == "streaming" else ""))
        if message.status == "error":
            st.error(message.error or "The reply failed.", icon=":material/error:")
        if message.stopped:
            st.caption("Stopped.")
        if message.is_ai and message.status in replies.OPEN and may_act(message):
            st.button("Stop", key=f"stop_{message.id}", on_click=stop, args=(message.id,))
        if message.is_ai and (message.status == "error" or message.stopped) and may_act(message):
            st.button("Retry", key=f"retry_{message.id}", on_click=retry, args=(message.id,))
        if message.is_ai and message.status not in replies.OPEN:
            context = context_used(message)
            if context or message.steps:
                draw_context(message, context)


@st.fragment(run_every=settings.refresh_seconds)
@guarded
def live_messages(channel_id: int) -> None:
    """Re-reads the channel only when its version changed; a pushed change reruns it at once."""
    state = st.session_state
    shown = (channel_id, chat.channel_version(db, channel_id), state.get("pages", 1))
    live.follow(db, settings, channel_id, shown[1])
    if state.get("shown") != shown:
        state["messages"] = chat.list_messages(db, channel_id, limit=PAGE * shown[2])
        state["shown"] = shown
    messages = state["messages"]
    if len(messages) == PAGE * shown[2]:
        st.button("Load older", key="older", on_click=state.update, kwargs={"pages": shown[2] + 1})
    if not messages:
        st.caption("No messages yet. Say hello!")
    for message in reversed(messages):
        draw(message)
    if error := state.pop("chat_error", None):
        st.error(error)


if st.session_state.get("pages_channel") != channel.id:  # a new channel starts at the newest page
    st.session_state["pages"], st.session_state["pages_channel"] = 1, channel.id
live_messages(channel.id)
