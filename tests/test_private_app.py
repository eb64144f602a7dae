"""Private channels and direct messages in the pages (AppTest, login mode with the test provider's claims): who sees
them in the sidebar, by link, in search, on the Channels and Tables pages, and who may invite, remove and leave."""
from __future__ import annotations

import pytest
from message_list import act, entries, listed

from core import accounts, chat, membership
from test_login_app import ANN, BOSS, CHANNELS, ISSUER, TABLES, _click, login_app  # noqa: F401

BOB = {"is_logged_in": True, "iss": ISSUER, "sub": "bob-sub", "email": "bob@example.com", "name": "Bob"}


def user_of(app_db, claims: dict) -> int:
    return accounts.user_for(app_db, accounts.identity_from_claims(claims)).id


@pytest.fixture
def hiring(app_db) -> dict:
    """Ann's private channel with a message Bob must never see, and a public one both read."""
    ann, bob = user_of(app_db, ANN), user_of(app_db, BOB)
    general = chat.create_channel(app_db, "general", reply_policy="off")
    channel = membership.create_private_channel(app_db, ann, "hiring")
    chat.update_channel(app_db, channel, reply_policy="off")
    chat.send_message(app_db, channel, ann, "zebra: the offer is 90k")
    chat.send_message(app_db, general, bob, "zebra crossing at noon")
    return {"ann": ann, "bob": bob, "general": general, "hiring": channel}


def test_the_sidebar_creates_a_private_channel_that_only_its_members_list(login_app, app_db):
    chat.create_channel(app_db, "general", reply_policy="off")
    at = login_app(ANN).run()
    at.sidebar.text_input(key="new_channel_name").input("hiring")
    at.sidebar.toggle(key="new_channel_private").set_value(True)
    at = _click(at, "Create channel")
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="channel_id").options == ["# general", "🔒 hiring"]
    assert at.header[0].value == "🔒 hiring"
    hiring = at.session_state["channel_id"]
    assert chat.get_channel(app_db, hiring).kind == "private"
    bob = login_app(BOB).run()
    assert bob.sidebar.selectbox(key="channel_id").options == ["# general"]


def test_a_link_to_a_private_channel_is_a_sentence_for_a_non_member(login_app, app_db, hiring):
    at = login_app(BOB)
    at.query_params["channel"] = str(hiring["hiring"])
    at.run()
    assert not at.exception
    assert at.session_state["channel_id"] == hiring["general"]  # not the private one
    assert "which you cannot open" in " ".join(w.value for w in at.sidebar.warning)
    assert all("90k" not in e["html"] for e in entries(at))
    at = login_app(BOB, channel_id=hiring["hiring"]).run()  # forced into the session: the sidebar puts it back
    assert at.session_state["channel_id"] == hiring["general"]
    at = login_app(ANN)
    at.query_params["channel"] = str(hiring["hiring"])
    at.run()
    assert at.session_state["channel_id"] == hiring["hiring"]
    assert any("90k" in e["html"] for e in entries(at))


def test_search_all_channels_finds_nothing_private_for_a_non_member(login_app, app_db, hiring):
    at = login_app(BOB, channel_id=hiring["general"], search_query="zebra", search_scope="All channels").run()
    shown = " ".join(m.value for m in at.markdown)
    assert "crossing" in shown and "90k" not in shown
    at = login_app(ANN, channel_id=hiring["general"], search_query="zebra", search_scope="All channels").run()
    assert "90k" in " ".join(m.value for m in at.markdown)


def test_direct_messages_are_opened_by_picking_people_and_named_by_the_others(login_app, app_db, hiring):
    at = login_app(ANN).run()
    at.sidebar.multiselect(key="new_direct_people").set_value([hiring["bob"]])
    at = _click(at, "Open direct message")
    assert not at.exception and not at.error
    dm = at.session_state["channel_id"]
    assert at.sidebar.selectbox(key="channel_id").options[-1] == "@ Bob" and at.header[0].value == "@ Bob"
    at.chat_input[0].set_value("just between us").run()
    bob = login_app(BOB).run()
    assert bob.sidebar.selectbox(key="channel_id").options[-1] == "@ Ann Example"
    assert [m.content for m in chat.list_messages(app_db, dm, reader=hiring["bob"])] == ["just between us"]


def test_members_invite_the_owner_removes_and_refusals_are_sentences(login_app, app_db, hiring):
    at = login_app(ANN, page=CHANNELS).run()
    assert not at.exception
    at.selectbox(key=f"invite_who_{hiring['hiring']}").set_value(hiring["bob"])
    at = _click(at, "Invite")
    assert not at.exception and "Invited Bob" in at.success[0].value
    assert membership.can_read(app_db, hiring["bob"], hiring["hiring"])
    bob = login_app(BOB, page=CHANNELS).run()
    bob.selectbox(key=f"remove_who_{hiring['hiring']}").set_value(hiring["ann"])
    bob = _click(bob, "Remove")
    assert "Only the creator of #hiring or an admin" in bob.error[0].value
    assert membership.can_read(app_db, hiring["ann"], hiring["hiring"])
    at = login_app(ANN, page=CHANNELS).run()
    at.selectbox(key=f"remove_who_{hiring['hiring']}").set_value(hiring["bob"])
    at = _click(at, "Remove")
    assert "Removed Bob" in at.success[0].value
    assert not membership.can_read(app_db, hiring["bob"], hiring["hiring"])
    assert "hiring" not in str(login_app(BOB, page=CHANNELS).run().dataframe[0].value["name"].tolist())


def test_tables_browse_hides_private_rows_from_non_admins_only(login_app, app_db, hiring):
    bob = login_app(BOB, page=TABLES).run()
    assert not bob.exception
    frame = bob.dataframe[0].value
    assert "zebra crossing at noon" in frame["content"].tolist() and "zebra: the offer is 90k" not in frame["content"].tolist()
    assert "# hiring" not in bob.selectbox(key="filter_channel").options
    boss = login_app(BOSS, page=TABLES).run()  # an admin inspects every row (the chat still shows them none)
    assert "zebra: the offer is 90k" in boss.dataframe[0].value["content"].tolist()
    assert login_app(BOSS).run().sidebar.selectbox(key="channel_id").options == ["# general"]


def test_open_mode_keeps_kinds_by_the_name_picked(app_test, app_db):
    ann, bob = chat.create_user(app_db, "Ann"), chat.create_user(app_db, "Bob")
    chat.create_channel(app_db, "general", reply_policy="off")
    at = app_test(user_id=ann).run()
    at.sidebar.text_input(key="new_channel_name").input("plans")
    at.sidebar.toggle(key="new_channel_private").set_value(True)
    at = _click(at, "Create channel")
    assert not at.exception and at.sidebar.selectbox(key="channel_id").options == ["# general", "🔒 plans"]
    at.sidebar.selectbox(key="user_id").set_value(bob).run()  # anyone may pick another name: the README says so
    assert at.sidebar.selectbox(key="channel_id").options == ["# general"]
    assert "anyone with this link can pick any name" in " ".join(c.value for c in at.sidebar.caption)


def test_a_member_leaves_and_reads_no_more(login_app, app_db, hiring):
    membership.invite(app_db, hiring["ann"], hiring["hiring"], hiring["bob"])
    at = login_app(BOB, page=CHANNELS).run()
    at = _click(at, "Leave")
    assert not at.exception and "You left" in at.success[0].value
    assert not membership.can_read(app_db, hiring["bob"], hiring["hiring"])
    assert login_app(BOB).run().sidebar.selectbox(key="channel_id").options == ["# general"]


def test_context_used_of_a_private_reply_is_refused_to_a_crafted_id(login_app, app_db, hiring):
    reply = chat.write_agent_response(app_db, hiring["hiring"], "the 90k offer, drafted")
    app_db.write(lambda tx: tx.execute("UPDATE messages SET context = ? WHERE id = ?", ['[{"content": "90k"}]', reply]))
    at = login_app(BOB, channel_id=hiring["general"]).run()
    at = act(at, "context", reply)  # an id from another channel's list, sent by hand
    opened = listed(at)["contexts"][str(reply)]
    assert "private" in opened["error"] and "90k" not in str(opened)


def test_an_admin_removes_from_a_private_channel_she_is_not_in(login_app, app_db, hiring):
    membership.invite(app_db, hiring["ann"], hiring["hiring"], hiring["bob"])
    at = login_app(BOSS, page=CHANNELS).run()
    at.selectbox(key=f"remove_who_{hiring['hiring']}").set_value(hiring["bob"])
    at = _click(at, "Remove")
    assert not at.exception and "Removed Bob" in at.success[0].value
    assert not membership.can_read(app_db, hiring["bob"], hiring["hiring"])
    assert app_db.one("SELECT by_user FROM membership_log WHERE act = 'remove'")[0] == user_of(app_db, BOSS)
    assert "90k" not in str([m.value for m in at.markdown])
