"""What the AI may do before it answers: search the history, read older messages, see retrieved ones.

What the AI may read: a reply posted in channel C is read by C's readers, so its tools read C itself and
public channels, never another private channel or direct message (core.membership.hidden_from_ai) — even when
the person who asked could read it. Another channel is, to the tools, a channel that does not exist.

Each call becomes a *step* kept on the reply (``messages.steps``, JSON), so every viewer sees "Searching
#general for 'deploy'…" while it runs, and "Context used" shows each call with its result. A call that
cannot run (unknown tool or channel, arguments that are not JSON, an argument given twice, a wrong type)
is a step with a readable error; the model is told the same and may try again or answer.
"""
from __future__ import annotations

import json
from typing import Any

from core.chat import (
    RECENT_LIMIT,
    Channel,
    Message,
    check_id,
    clean_name,
    get_channel,
    get_message,
    list_messages,
    name_key,
)
from core.context import SNIPPET_TOKENS, trim
from core.errors import ChatError, NotFound, ValidationError
from core.membership import hidden_from_ai
from core.search import related_messages, search_messages
from core.store import Database

READ_LIMIT = 10  # messages read_messages returns: one page, as the chat shows
SEARCH_LIMIT = 8  # hits search_messages returns: enough to choose from, little to read
RETRIEVED = 5  # older messages a "look further back" channel adds to the context
QUOTE_MAX = 40  # characters of a query quoted in a step line

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_messages",
            "description": "Search the chat history (this channel and the public ones, or one of them) for messages "
            "about something. Returns the best matches with their id, channel, author and time. Private channels "
            "and direct messages other than this one are never searched: everyone here reads your answer.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words to look for, e.g. 'deploy monday'."},
                    "channel": {"type": "string", "description": "A channel name such as 'general'; omit for all."},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_messages",
            "description": f"Read {READ_LIMIT} consecutive messages of a channel, the newest ones or those "
            "just before a message id (e.g. to see what led up to a search result). Only this channel and "
            "public ones can be read.",
            "parameters": {
                "type": "object",
                "properties": {
                    "channel": {"type": "string", "description": "A channel name such as 'general'."},
                    "before": {"type": "integer", "description": "Only messages older than this message id."},
                },
                "required": ["channel"],
                "additionalProperties": False,
            },
        },
    },
]
NAMES = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def steps_of(message: Message) -> list[dict]:
    """The steps kept on a reply (tool calls, retrieval, cuts), oldest first."""
    try:
        steps = json.loads(message.steps) if message.steps else []
    except ValueError:
        return []
    return steps if isinstance(steps, list) else []


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return f"'{text[:QUOTE_MAX]}…'" if len(text) > QUOTE_MAX else f"'{text}'"


def _find_channel(db: Database, name: Any, here: Channel) -> Channel:
    """A channel named by the model ('general', '#general' or an id) that a reply in ``here`` may read, or a
    readable error; a private channel or direct message other than ``here`` is answered as one that does not exist."""
    if isinstance(name, bool) or not isinstance(name, (int, str)):
        raise ValidationError("The channel must be given by name, such as 'general'.")
    wanted = name.strip().lstrip("#").strip() if isinstance(name, str) else str(name)
    if wanted.isdigit() and wanted.isascii():
        try:
            found = get_channel(db, int(wanted))
        except NotFound:
            found = None
        if found is None or (found.kind != "public" and found.id != here.id):
            raise NotFound(f"Channel {int(wanted)} not found.")
        return found
    if not wanted:
        return here
    key = name_key(clean_name(wanted, "Channel name"))
    if key == name_key(here.name):
        return here
    row = db.one("SELECT id FROM channels WHERE name_key = ? AND kind = 'public'", [key])
    if row is None:
        raise ValidationError(f"There is no channel named #{wanted}.")
    return get_channel(db, row[0])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValidationError(f"The argument {key!r} was given twice.")
        seen[key] = value
    return seen


def parse_arguments(name: str, raw: str) -> dict:
    """A tool call's arguments as a dict, checked against its schema, or a ValidationError saying what is wrong."""
    if name not in NAMES:
        raise ValidationError(f"There is no tool named {name!r}; the tools are {', '.join(NAMES)}.")
    try:
        arguments = json.loads(raw or "{}", object_pairs_hook=_no_duplicates)
    except ValueError as error:
        if isinstance(error, ValidationError):
            raise
        raise ValidationError("The arguments were not valid JSON.") from None
    if not isinstance(arguments, dict):
        raise ValidationError("The arguments must be a JSON object.")
    schema = NAMES[name]
    for key in arguments:
        if key not in schema["properties"]:
            raise ValidationError(f"{name} has no argument {key!r}.")
    for key in schema["required"]:
        if arguments.get(key) in (None, ""):
            raise ValidationError(f"{name} needs the argument {key!r}.")
    for key, value in arguments.items():
        kind = schema["properties"][key]["type"]
        ok = isinstance(value, str) if kind == "string" else isinstance(value, int) and not isinstance(value, bool)
        if value is not None and not ok:
            raise ValidationError(f"The argument {key!r} must be a {'text' if kind == 'string' else 'whole number'}.")
    return arguments


def label(name: str, arguments: dict, here: Channel) -> str:
    """The step line shown while a tool runs."""
    channel = arguments.get("channel")
    where = "all channels" if not channel else f"#{str(channel).strip().lstrip('#')}"
    if name == "search_messages":
        return f"Searching {where} for {_quote(str(arguments.get('query', '')))}…"
    where = f"#{str(channel or here.name).strip().lstrip('#')}"
    before = arguments.get("before")
    return f"Reading {where} before message {before}…" if before else f"Reading the latest messages of {where}…"


def _line(message_id: int, channel: str, author: str | None, created_at: Any, text: str) -> str:
    when = created_at.strftime("%Y-%m-%d %H:%M") if hasattr(created_at, "strftime") else str(created_at)
    snippet, _ = trim(text, SNIPPET_TOKENS)
    return f"[id {message_id} · #{channel} · {when} UTC] {author or 'AI'}: {snippet}"


def run(db: Database, name: str, arguments: dict, here: Channel) -> tuple[str, str]:
    """Run a checked tool call: (what the model is told, a short summary for the step line)."""
    if name == "search_messages":
        channel = _find_channel(db, arguments["channel"], here) if arguments.get("channel") else None
        hits = search_messages(db, arguments["query"], channel.id if channel else None, limit=SEARCH_LIMIT,
                               hidden=hidden_from_ai(db, here.id))
        if not hits:
            return "No messages matched.", "nothing found"
        lines = [_line(h.message_id, h.channel_name, h.author_name, h.created_at, h.content) for h in hits]
        found = f"{len(hits)} message{'s' if len(hits) > 1 else ''}"
        return f"Found {found}, best first:\n" + "\n".join(lines), f"found {found}"
    channel = _find_channel(db, arguments["channel"], here)
    before = check_id(arguments["before"], "Message") if arguments.get("before") else None
    messages = [m for m in list_messages(db, channel.id, READ_LIMIT, before_id=before)
                if m.status == "complete" and m.deleted_at is None]
    if not messages:
        return f"#{channel.name} has no messages there.", "no messages"
    lines = [_line(m.id, channel.name, m.author_name, m.created_at, m.content) for m in reversed(messages)]
    count = f"{len(lines)} message{'s' if len(lines) > 1 else ''}"
    return f"{count} of #{channel.name}, oldest first:\n" + "\n".join(lines), f"read {count}"


def call(db: Database, name: str, raw_arguments: str, here: Channel) -> dict:
    """Check and run one tool call; return its step (``output`` is what the model is told)."""
    step: dict[str, Any] = {"kind": "tool", "tool": name, "arguments": raw_arguments}
    try:
        arguments = parse_arguments(name, raw_arguments)
        step["label"] = label(name, arguments, here)
        step["output"], step["summary"] = run(db, name, arguments, here)
        step["state"] = "done"
    except ChatError as error:
        step.setdefault("label", f"Could not use {name}")
        step["state"], step["error"] = "error", str(error)
        step["output"] = f"Error: {error}"
    return step


def retrieval_note(hits: list, budget: int) -> tuple[dict | None, dict | None]:
    """Older messages as a marked system note within ``budget`` tokens, and the step that shows them."""
    if not hits:
        return None, None
    lines = [_line(h.message_id, h.channel_name, h.author_name, h.created_at, h.content) for h in hits]
    header = ("Older messages from this channel that may be relevant, found by search (they are not part of "
              "the recent conversation; quote them only if they help):")
    text, cut = trim(header + "\n" + "\n".join(lines), budget)
    step = {
        "kind": "retrieval",
        "label": f"Looked further back: {len(hits)} older message{'s' if len(hits) > 1 else ''} added",
        "output": text,
        "ids": [h.message_id for h in hits],
    }
    if cut:
        step["summary"] = f"trimmed by {cut:,} characters to fit"
    return {"role": "system", "content": text}, step


def look_back(db: Database, channel: Channel, trigger_id: int, budget: int) -> tuple[dict | None, dict | None]:
    """For a "look further back" channel: the messages most related to the trigger from before the recent window."""
    window = db.rows(
        "SELECT id FROM messages WHERE channel_id = ? AND status = 'complete' AND content <> '' AND id <= ? "
        "ORDER BY id DESC LIMIT ?",
        [channel.id, trigger_id, RECENT_LIMIT],
    )
    if len(window) < RECENT_LIMIT:
        return None, None  # the whole history is already in the recent window
    try:
        hits = related_messages(db, channel.id, get_message(db, trigger_id).content, limit=RETRIEVED,
                                before_id=min(row[0] for row in window))
    except ChatError:
        return None, None
    return retrieval_note(hits, budget)
