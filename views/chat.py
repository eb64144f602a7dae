"""Chat: the channel's message list (views/messages.py), live, and a box to write in."""
import time

import streamlit as st

from core import chat, edits, membership, reactions, replies
from core.attachments import Upload
from core.errors import ChatError
from views import live, messages
from views.common import (
    current_channel,
    current_user,
    escape_markdown,
    get_db,
    get_settings,
    guarded,
    is_admin,
    session_scratch,
    show_error,
)
from views.search import search_panel
from views.sidebar import MARKS, label

PAGE = chat.RECENT_LIMIT  # messages per "load older" step, as many as the original lists
SENT = "chat_sent_by_callback"  # this run's message was stored by the chat box's callback
NOT_SENT = "chat_not_sent"  # why the last message could not be stored, until it is drawn
SENDING = "chat_sending"  # this session's lock around a send, and its last stored (channel, user, text, time)
REFUSED = "chat_refused"  # the last refused lines, for the message list to mark the line it drew as sent
REFUSALS_KEPT = 5
REPEAT_SECONDS = 1.0  # the same text again this soon is one submit the browser sent twice, not a second message

db, settings = get_db(), get_settings()
user, channel = current_user(db), current_channel(db)
reader = user.id if user else None  # who reads: core refuses a private channel or direct message to others
# Stop and Retry act on anyone's reply for an admin, and for everyone in open mode (it has no roles);
# otherwise only on the replies one asked for. Core decides; the buttons only follow.
acts_for_all = not settings.login or is_admin()
# Deleting another person's message (and any AI reply) is for admins in login mode; open mode has no roles, so
# there one deletes what the user one speaks as wrote (an AI reply goes with the message that asked for it).
deletes_any = settings.login and is_admin()
if channel is None:
    st.info("Create a channel in the sidebar to start chatting.")
    live.follow_directory(db, settings)
    st.stop()
if not membership.can_read(db, reader, channel.id):  # the sidebar offers only readable ones; this is the rule again
    show_error(membership.NotAMember(f"Channel {channel.id} is private: only its members can read it."))
    st.stop()
channel = membership.shown_as(db, channel, reader)


def send(channel_id: int, user_id: int, key: str) -> None:
    """Chat box callback: store the message before the page runs.

    Streamlit stops a running script when a newer full rerun arrives (runner.fastReruns), so a message
    handled in the page body could be dropped before it reached the database. Callbacks run before the
    body; their only stop points are st.session_state accesses, so ``store`` keeps what it must not lose
    after the write out of st.session_state.
    """
    st.session_state[SENT] = True
    text, files = parts(st.session_state.get(key))
    if (text or files) and not store(channel_id, user_id, text, files) and text.strip():
        st.session_state[key] = text  # back in the box, to send again (files are picked again)


def parts(value) -> tuple[str, list[Upload]]:
    """What the chat box sent: its text, and its files and voice recording as uploads."""
    if value is None or isinstance(value, str):
        return value or "", []
    files = [Upload(f.name, f.getvalue()) for f in (getattr(value, "files", None) or [])]
    audio = getattr(value, "audio", None)
    if audio is not None:
        files.append(Upload(audio.name or "voice message.wav", audio.getvalue()))
    return getattr(value, "text", "") or "", files


def store(channel_id: int, user_id: int, prompt: str, files: list[Upload] | None = None) -> bool:
    """Send; or keep a notice that says the message was not sent and why, and return False.

    A slow browser (seen with Chromium's CPU throttled) can submit one Enter twice: the same text from the
    same window again within REPEAT_SECONDS is taken as that, and stored once.
    """
    sending = session_scratch(SENDING)
    with sending["lock"]:  # the stopped run's callback and the new run's may both be here
        now, last = time.monotonic(), sending.get("last")
        said = (prompt, tuple((f.name, len(f.data)) for f in files or ()))
        if last and last[:3] == (channel_id, user_id, said) and now - last[3] < REPEAT_SECONDS:
            return True
        try:
            settings = get_settings()
            chat.send_message(get_db(), channel_id, user_id, prompt, limits=settings.limits, files=files or (),
                              max_file_bytes=settings.attachment_max_mb * 1024 * 1024)
        except ChatError as error:
            st.session_state[NOT_SENT] = f"Your message was not sent. {error}"
            # The list marks the line it drew at Enter with why (the last few refusals, for it to match).
            st.session_state[REFUSED] = [*st.session_state.get(REFUSED, [])[-REFUSALS_KEPT + 1:],
                                         {"text": prompt, "reason": str(error), "at": time.time()}]
            return False
        sending["last"] = (channel_id, user_id, said, time.monotonic())  # no stop point since the write
        return True


st.header(f"{MARKS.get(channel.kind, '#')} {escape_markdown(channel.name)}", divider="gray")
search_panel(db, channel, reader)
if user is None:
    st.info("Create a user in the sidebar to write in this channel.")
else:
    key = f"draft_{channel.id}"
    # "disable": the box stays disabled until the run that carries a message is over, so the next send
    # cannot stop that run — the one path a callback does not cover is a session's first run, whose
    # page has not yet told Streamlit about the callback (a window that outlived a server restart).
    where = f"#{channel.name}" if channel.kind == "public" else label(channel)
    prompt = st.chat_input(f"Message {where} as {user.name}", key=key, submit_mode="disable",
                           accept_file="multiple", accept_audio=True, max_upload_size=settings.attachment_max_mb,
                           on_submit=send, args=(channel.id, user.id, key))
    live.guard_chat_input()
    sent = st.session_state.pop(SENT, False)
    if prompt and not sent:
        store(channel.id, user.id, *parts(prompt))
if notice := st.session_state.get(NOT_SENT):
    show_error(notice)
    del st.session_state[NOT_SENT]  # after drawing: a run stopped mid-way shows it on the next one


def act(kind: str, message_id: int | None, payload: dict) -> None:
    """The list's callback for a person's act; core decides who may, and a refusal becomes the list's notice."""
    by = user.id if user else None
    try:
        if kind == "stop" and message_id is not None:
            replies.stop_reply(db, message_id, by, admin=acts_for_all)
        elif kind == "retry" and message_id is not None:
            replies.retry_reply(db, message_id, by, admin=acts_for_all, limits=settings.limits)
        elif kind == "regenerate" and message_id is not None:
            replies.regenerate_reply(db, message_id, by, admin=acts_for_all, limits=settings.limits)
        elif kind == "edit" and message_id is not None:
            edits.edit_message(db, message_id, by, payload.get("text"), limits=settings.limits)
        elif kind == "delete" and message_id is not None:
            edits.delete_message(db, message_id, by, admin=deletes_any, limits=settings.limits)
        elif kind == "react" and message_id is not None:
            reactions.toggle_reaction(db, message_id, by, payload.get("emoji"), limits=settings.limits)
        elif kind == "older":
            st.session_state["pages"] = st.session_state.get("pages", 1) + 1
        elif kind == "context" and message_id is not None:
            messages.open_context(db, message_id, reader)
    except ChatError as error:
        st.session_state["chat_error"] = str(error)


@st.fragment(run_every=settings.refresh_seconds)
@guarded
def live_messages(channel_id: int) -> None:
    """The list, fed by pushes; this re-reads the channel only when its version changed (the fallback check,
    a person's act, or a push when the list has no socket of its own)."""
    state = st.session_state
    shown = (channel_id, chat.channel_version(db, channel_id), state.get("pages", 1))
    live.follow_directory_changes(db)
    if state.get("shown") != shown:
        state["messages"] = chat.list_messages(db, channel_id, limit=PAGE * shown[2], reader=reader)
        state["shown"] = shown
    listed = state["messages"]
    viewer = {"id": user.id if user else None, "name": user.name if user else None, "all": acts_for_all,
              "admin": deletes_any, "emoji": reactions.DEFAULT_ROW,
              "ticket": live.channel_ticket(settings, channel_id)}  # for the files (views/files.py)
    messages.message_list(db, channel_id=channel_id, messages=listed, more=len(listed) == PAGE * shown[2],
                          image_hosts=settings.image_hosts, viewer=viewer,
                          live=live.subscription(db, settings, channel_id, shown[1], content=True),
                          refused=state.get(REFUSED, []), error=state.pop("chat_error", None), act=act)


if st.session_state.get("pages_channel") != channel.id:  # a new channel starts at the newest page
    st.session_state["pages"], st.session_state["pages_channel"] = 1, channel.id
live_messages(channel.id)
