"""The chat page's message list under AppTest: what the page handed the list, and a person's acts on it.

AppTest runs no JavaScript, so it reads the list's data (the entries views/messages.py mounted) and
fires the list's trigger the way the browser does: a trigger payload for the component's "action"
event in the next run's widget states. What the list then draws in a browser is covered by the
Chromium tests (tests/test_list_browser.py).
"""
from __future__ import annotations

import json
from html.parser import HTMLParser

from streamlit.proto.WidgetStates_pb2 import WidgetStates

COMPONENT = "channel_chat.messages"
TRIGGER_SUFFIX = "__events"  # Streamlit's trigger aggregator id: "$$STREAMLIT_INTERNAL_KEY_<component id>__events"
INTERNAL = "$$STREAMLIT_INTERNAL_KEY_"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(html: str) -> str:
    """The text a reader sees of an entry's HTML."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts).strip()


def _protos(at) -> list:
    return [node.proto for node in at.get("bidi_component") if node.proto.component_name == COMPONENT]


def listed(at) -> dict | None:
    """The data the run handed the message list (None if no list was drawn)."""
    found = _protos(at)
    assert len(found) <= 1, "one message list per page"
    return json.loads(found[0].bytes) if found else None


def entries(at) -> list[dict]:
    """The list's entries, oldest first ([] if no list)."""
    data = listed(at)
    return data["entries"] if data else []


def texts(at) -> list[str]:
    """What each listed message reads as, oldest first."""
    return [text_of(entry["html"]) for entry in entries(at)]


def buttons(at, entry: dict) -> list[str]:
    """The buttons the list draws on ``entry`` for this viewer (views/messages.js's rule)."""
    viewer = listed(at)["viewer"]
    may = viewer["id"] is not None and (viewer["all"] or viewer["id"] in entry.get("asked_by", []))
    found = []
    if entry["ai"] and entry["status"] in ("pending", "streaming") and may:
        found.append("Stop")
    if entry["ai"] and (entry["status"] == "error" or entry["stopped"]) and may:
        found.append("Retry")
    return found


def act(at, do: str, message_id: int | None = None, n: int = 1, **payload):
    """Press a button of the list (Stop, Retry, Load older, Context used, Edit's Save with ``text``, Delete, a
    reaction with ``emoji``, Regenerate) and run the page, as a browser would."""
    [proto] = _protos(at)
    states = at._tree.get_widget_states()  # the other widgets keep their values, as in a browser's rerun
    trigger = WidgetStates().widgets.add()
    trigger.id = f"{INTERNAL}{proto.id}{TRIGGER_SUFFIX}"
    trigger.json_trigger_value = json.dumps([{"event": "action", "value": {"do": do, "id": message_id, "n": n, **payload}}])
    states.widgets.append(trigger)
    return at._run(states)
