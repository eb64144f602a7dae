"""The chat page's act callback for Edit, Delete, reactions and Regenerate (AppTest): core decides with the page's
user, a refusal is the list's notice, and the list's data carries what each window draws."""
from __future__ import annotations

from message_list import act, entries, listed, text_of
from test_login_app import ANN, BOSS, login_app  # noqa: F401 - the fixture

from core import chat, edits, jobs, replies


def _page(app_test, **session):
    return app_test(**session).run()


def test_edit_react_and_delete_through_the_list(app_test, app_db):
    ann, bob = chat.create_user(app_db, "Ann"), chat.create_user(app_db, "Bob")
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    mine = chat.send_message(app_db, channel, ann, "helo")
    theirs = chat.send_message(app_db, channel, bob, "Bob's line")
    at = _page(app_test, user_id=ann, channel_id=channel)
    assert listed(at)["viewer"]["id"] == ann and listed(at)["viewer"]["admin"] is False  # open mode has no admins
    assert entries(at)[0]["text"] == "helo"  # what the Edit box starts from
    at = act(at, "edit", mine, text="hello")
    first = entries(at)[0]
    assert text_of(first["html"]) == "hello" and first["edited"] and not at.exception
    at = act(at, "react", theirs, n=2, emoji="🎉")
    assert entries(at)[1]["reactions"] == [{"emoji": "🎉", "count": 1, "by": [ann], "names": ["Ann"]}]
    at = act(at, "react", theirs, n=3, emoji="not an emoji")
    assert listed(at)["error"] == "A reaction is one emoji, not text."
    at = act(at, "edit", theirs, n=4, text="Ann was here")
    assert listed(at)["error"] == "Only Bob, who wrote this message, can edit it."
    at = act(at, "delete", theirs, n=5)
    assert listed(at)["error"] == "Only Bob, who wrote this message, can delete it."
    at = act(at, "delete", mine, n=6)
    tomb = entries(at)[0]
    assert tomb["deleted"] and tomb["html"] == "" and tomb["text"] == "" and listed(at)["error"] is None
    assert chat.get_message(app_db, theirs).content == "Bob's line"
    assert [r["content"] for r in edits.revisions_of(app_db, mine)] == []


def test_regenerate_after_an_edit_through_the_list(app_test, app_db):
    ann = chat.create_user(app_db, "Ann")
    channel = chat.create_channel(app_db, "general")
    message_id = chat.send_message(app_db, channel, ann, "what is 2 + 2?")
    job = jobs.claim_next_job(app_db)
    replies.finish_reply(app_db, job, "5")
    edits.edit_message(app_db, message_id, ann, "what is 2 + 3?")
    at = _page(app_test, user_id=ann, channel_id=channel)
    reply = entries(at)[1]
    assert reply["trigger"] == message_id and entries(at)[0]["edited"] > reply["asked_at"]  # the list offers it
    at = act(at, "regenerate", reply["id"])
    assert not at.exception and listed(at)["error"] is None
    assert app_db.one("SELECT cause, requested_by FROM ai_jobs WHERE reply_id = ? ORDER BY id DESC LIMIT 1",
                      [reply["id"]]) == ("retry", ann)


def test_login_mode_only_admins_delete_what_others_wrote(login_app, app_db):  # noqa: F811 - the fixture
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = login_app(ANN, channel_id=channel).run()
    at.chat_input[0].set_value("Ann's message").run()
    (message,) = chat.list_messages(app_db, channel)
    bob_claims = {"is_logged_in": True, "iss": ANN["iss"], "sub": "bob-sub", "email": "bob@example.com", "name": "Bob"}
    bob_page = login_app(bob_claims, channel_id=channel).run()
    assert listed(bob_page)["viewer"]["admin"] is False
    bob_page = act(bob_page, "delete", message.id)
    assert listed(bob_page)["error"] == "Only Ann Example, who wrote this message, can delete it."
    boss_page = login_app(BOSS, channel_id=channel).run()
    assert listed(boss_page)["viewer"]["admin"] is True
    boss_page = act(boss_page, "delete", message.id)
    assert entries(boss_page)[0]["deleted"] and not boss_page.exception
    boss = next(u.id for u in chat.list_users(app_db) if u.name == "Boss")
    assert chat.get_message(app_db, message.id).deleted_by == boss
