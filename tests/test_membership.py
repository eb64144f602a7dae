"""Private channels and direct messages on both backends: the kinds, the acts, and the one reading rule on every
core read path (listing, "Load older", sending, search, messages around a result, the AI's tools)."""
from __future__ import annotations

import json

import pytest

from core import chat, membership, search, tools
from core.errors import NotFound, ValidationError
from core.membership import NotAMember


@pytest.fixture
def people(db) -> dict[str, int]:
    return {name: chat.create_user(db, name) for name in ("Ann", "Bob", "Cy", "Dee")}


@pytest.fixture
def hiring(db, people) -> int:
    """A private channel Ann made and invited Bob to; Cy and Dee are not in it."""
    channel = membership.create_private_channel(db, people["Ann"], "hiring")
    chat.update_channel(db, channel, reply_policy="off")
    membership.invite(db, people["Ann"], channel, people["Bob"])
    return channel


# the model ------------------------------------------------------------------------------------------
def test_a_private_channel_has_its_creator_as_owner_and_members_by_invitation(db, people, hiring):
    assert chat.get_channel(db, hiring).kind == "private"
    assert [(m.name, m.role, m.added_by) for m in membership.members(db, hiring)] == [
        ("Ann", "owner", people["Ann"]), ("Bob", "member", people["Ann"])]
    membership.invite(db, people["Bob"], hiring, people["Cy"])  # a member invites
    assert [m.name for m in membership.members(db, hiring)] == ["Ann", "Bob", "Cy"]
    with pytest.raises(NotAMember, match="Only members of #hiring can invite"):
        membership.invite(db, people["Dee"], hiring, people["Dee"])
    with pytest.raises(ValidationError, match="Cy is already a member"):
        membership.invite(db, people["Ann"], hiring, people["Cy"])
    acts = db.rows("SELECT act, user_id, by_user FROM membership_log ORDER BY id")
    assert acts == [("create", people["Ann"], people["Ann"]), ("invite", people["Bob"], people["Ann"]),
                    ("invite", people["Cy"], people["Bob"])]


def test_the_owner_and_admins_remove_members_and_anyone_leaves(db, people, hiring):
    membership.invite(db, people["Ann"], hiring, people["Cy"])
    with pytest.raises(NotAMember, match="Only the creator of #hiring or an admin"):
        membership.remove(db, people["Bob"], hiring, people["Cy"])
    membership.remove(db, people["Ann"], hiring, people["Cy"])
    membership.remove(db, people["Dee"], hiring, people["Bob"], admin=True)  # an admin, not a member
    assert [m.name for m in membership.members(db, hiring)] == ["Ann"]
    membership.invite(db, people["Ann"], hiring, people["Bob"])  # back again, by invitation
    membership.leave(db, people["Bob"], hiring)
    with pytest.raises(ValidationError, match="not a member"):
        membership.leave(db, people["Bob"], hiring)
    assert db.rows("SELECT act, user_id, by_user FROM membership_log WHERE act IN ('remove', 'leave') ORDER BY id") == [
        ("remove", people["Cy"], people["Ann"]), ("remove", people["Bob"], people["Dee"]),
        ("leave", people["Bob"], people["Bob"])]


def test_private_names_follow_the_channel_name_rules(db, people, hiring, general):
    with pytest.raises(ValidationError, match="already exists"):
        membership.create_private_channel(db, people["Cy"], "General")
    with pytest.raises(ValidationError, match="already exists"):
        chat.create_channel(db, "HIRING")


def test_public_channels_have_no_members_to_add(db, people, general):
    with pytest.raises(ValidationError, match="is public"):
        membership.invite(db, people["Ann"], general, people["Bob"])
    assert membership.members(db, general) == []


def test_one_direct_message_per_set_of_people_and_nobody_added_later(db, people):
    ann, bob, cy = people["Ann"], people["Bob"], people["Cy"]
    dm = membership.open_direct(db, ann, [bob])
    assert membership.open_direct(db, bob, [ann]) == dm  # the same two people: the same conversation
    group = membership.open_direct(db, cy, [ann, bob])
    assert group != dm and chat.get_channel(db, group).kind == "direct"
    assert chat.get_channel(db, dm).reply_policy == "mention"  # the AI answers there only when asked
    with pytest.raises(ValidationError, match="Nobody can be added to a direct message"):
        membership.invite(db, ann, dm, cy)
    with pytest.raises(ValidationError, match="Nobody can be removed"):
        membership.remove(db, ann, dm, bob, admin=True)
    with pytest.raises(ValidationError, match="2 to 8 people"):
        membership.open_direct(db, ann, [])
    with pytest.raises(ValidationError, match="2 to 8 people, you included; this names 9"):
        membership.open_direct(db, ann, [chat.create_user(db, f"P{i}") for i in range(8)])
    with pytest.raises(NotFound):
        membership.open_direct(db, ann, [999])
    membership.leave(db, bob, dm)
    assert not membership.can_read(db, bob, dm)
    assert membership.open_direct(db, bob, [ann]) == dm and membership.can_read(db, bob, dm)  # back in it


def test_direct_messages_do_not_take_a_name_nor_collide_with_one(db, people):
    dm = membership.open_direct(db, people["Ann"], [people["Bob"]])
    public = chat.create_channel(db, "Ann, Bob")  # the stored list of people is no channel's name
    assert public != dm


def test_my_channels_lists_public_then_private_then_direct_named_by_the_others(db, people, hiring, general):
    ann, bob, cy = people["Ann"], people["Bob"], people["Cy"]
    zoo = chat.create_channel(db, "zoo")
    secret = membership.create_private_channel(db, cy, "alpha")
    dm = membership.open_direct(db, ann, [bob])
    group = membership.open_direct(db, ann, [bob, cy])
    mine = membership.my_channels(db, ann)
    assert [(c.id, c.name, c.kind) for c in mine] == [
        (general, "general", "public"), (zoo, "zoo", "public"), (hiring, "hiring", "private"),
        (dm, "Bob", "direct"), (group, "Bob, Cy", "direct")]
    assert [c.name for c in membership.my_channels(db, bob)] == ["general", "zoo", "hiring", "Ann", "Ann, Cy"]
    assert [c.name for c in membership.my_channels(db, cy)] == ["general", "zoo", "alpha", "Ann, Bob"]
    assert [c.name for c in membership.my_channels(db, None)] == ["general", "zoo"]  # nobody signed in
    assert secret not in [c.id for c in mine]


# the rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("who, readable", [("Ann", True), ("Bob", True), ("Cy", False), (None, False)])
def test_can_read_matrix(db, people, hiring, general, who, readable):
    person = people[who] if who else None
    assert membership.can_read(db, person, hiring) is readable
    assert membership.can_read(db, person, general) is True
    assert membership.can_read(db, person, hiring, admin=True) is True  # the Tables page's admin only
    assert membership.can_read(db, person, 999) is False


@pytest.mark.parametrize("who", ["Cy", None])
def test_a_non_member_gets_a_sentence_for_list_older_send_and_around(db, people, hiring, who):
    first = chat.send_message(db, hiring, people["Ann"], "the offer for Zed is 90k")
    person = people[who] if who else None
    refusal = "Channel .* is private: only its members can read it"
    with pytest.raises(NotAMember, match=refusal):
        chat.list_messages(db, hiring, reader=person)
    with pytest.raises(NotAMember, match=refusal):
        chat.list_messages(db, hiring, before_id=first + 1, reader=person)  # "Load older"
    with pytest.raises(NotAMember, match=refusal):
        search.messages_around(db, first, reader=person)
    if person is not None:
        with pytest.raises(NotAMember, match="Only members can write in this channel"):
            chat.send_message(db, hiring, person, "let me in")
    assert [m.content for m in chat.list_messages(db, hiring, reader=people["Bob"])] == ["the offer for Zed is 90k"]
    assert db.one("SELECT count(*) FROM messages WHERE channel_id = ?", [hiring]) == (1,)


def test_a_removed_member_reads_no_more(db, people, hiring):
    chat.send_message(db, hiring, people["Bob"], "hello")
    membership.remove(db, people["Ann"], hiring, people["Bob"])
    with pytest.raises(NotAMember):
        chat.list_messages(db, hiring, reader=people["Bob"])
    with pytest.raises(NotAMember):
        chat.send_message(db, hiring, people["Bob"], "still here?")


def test_only_the_people_of_a_direct_message_read_and_write_it(db, people):
    dm = membership.open_direct(db, people["Ann"], [people["Bob"]])
    chat.send_message(db, dm, people["Bob"], "just between us")
    with pytest.raises(NotAMember, match="Only members can write in this direct message"):
        chat.send_message(db, dm, people["Cy"], "hi")
    with pytest.raises(NotAMember):
        chat.list_messages(db, dm, reader=people["Cy"])


def test_search_never_returns_a_private_channels_text_and_pages_stay_full(db, people, hiring, general):
    for i in range(15):  # hidden matches, newer than the readable ones below would be if interleaved
        chat.send_message(db, hiring, people["Ann"], f"zebra secret {i}")
    for i in range(12):
        chat.send_message(db, general, people["Bob"], f"zebra public {i}")
    for i in range(15):
        chat.send_message(db, hiring, people["Ann"], f"zebra secret late {i}")
    hits = search.search_messages(db, "zebra", limit=10, reader=people["Cy"])
    assert len(hits) == 10 and all(h.channel_id == general for h in hits)  # a full page, none hidden
    second = search.search_messages(db, "zebra", limit=10, offset=10, reader=people["Cy"])
    assert [h.content for h in second] == ["zebra public 1", "zebra public 0"]  # the rest, not padded
    assert search.search_messages(db, "secret", reader=people["Cy"]) == []
    assert search.search_messages(db, "secret", reader=None) == []
    assert len(search.search_messages(db, "secret", limit=50, reader=people["Bob"])) == 30  # a member finds them
    with pytest.raises(NotAMember):
        search.search_messages(db, "zebra", channel_id=hiring, reader=people["Cy"])
    any_term = search._keyword_ids(db, ["zebra"], "zebra", None, 50, every_term=False,
                                   hidden=membership.hidden_from(db, people["Cy"]))
    assert len(any_term) == 12  # retrieval's ranking filters the same way


def test_semantic_search_filters_by_readable_channels_before_ranking(db, people, hiring, general):
    from core.embeddings import Embedder, attach, local_provider

    chat.send_message(db, hiring, people["Ann"], "the candidate accepted the offer")
    chat.send_message(db, general, people["Bob"], "lunch is pizza today")
    provider = local_provider()
    embedder = Embedder(db, provider)
    while embedder.run_once():
        pass
    embedder.run_once()
    attach(db, provider)
    hits = search.search_messages(db, "candidate offer accepted", reader=people["Cy"])
    assert all(h.channel_id == general for h in hits)
    assert any(h.channel_id == hiring for h in search.search_messages(db, "candidate offer", reader=people["Ann"]))


# the AI's tools -------------------------------------------------------------------------------------
def run_tool(db, name: str, here: int, **arguments) -> dict:
    return tools.call(db, name, json.dumps(arguments), chat.get_channel(db, here))


def test_the_ais_tools_read_this_channel_and_public_ones_only(db, people, hiring, general):
    chat.send_message(db, hiring, people["Ann"], "pelican budget is 90k")
    chat.send_message(db, general, people["Bob"], "pelican sightings at the lake")
    dm = membership.open_direct(db, people["Ann"], [people["Bob"]])
    chat.send_message(db, dm, people["Bob"], "pelican gossip")
    step = run_tool(db, "search_messages", general, query="pelican")  # a reply in a public channel
    assert "sightings" in step["output"] and "90k" not in step["output"] and "gossip" not in step["output"]
    step = run_tool(db, "search_messages", general, query="budget 90k")
    assert step["output"] == "No messages matched."
    for named in ("hiring", "#hiring", str(hiring), hiring):
        step = run_tool(db, "read_messages", general, channel=named)
        assert step["state"] == "error" and "90k" not in step["output"], named
        step = run_tool(db, "search_messages", general, query="pelican", channel=named)
        assert step["state"] == "error" and "90k" not in step["output"], named
    here = run_tool(db, "search_messages", hiring, query="pelican")  # a reply in the private channel itself
    assert "90k" in here["output"] and "sightings" in here["output"] and "gossip" not in here["output"]
    assert "90k" in run_tool(db, "read_messages", hiring, channel="hiring")["output"]
    assert "gossip" not in run_tool(db, "read_messages", hiring, channel=str(dm))["output"]


def test_only_members_stop_or_retry_a_private_channels_replies_admins_too(db, people, hiring):
    from core import jobs, replies

    chat.update_channel(db, hiring, reply_policy="every")
    chat.send_message(db, hiring, people["Ann"], "@ai draft the offer")
    job = jobs.claim_next_job(db)
    replies.fail_reply(db, job, "The AI service is down (HTTP 503).")
    for act in (replies.retry_reply, replies.stop_reply):
        with pytest.raises(NotAMember, match="Only members of this channel"):
            act(db, job.reply_id, people["Cy"], admin=True)
    assert replies.retry_reply(db, job.reply_id, people["Ann"]) is True


def test_hidden_channels_are_the_ones_a_person_or_a_reply_may_not_read(db, people, hiring, general):
    dm = membership.open_direct(db, people["Cy"], [people["Dee"]])
    assert membership.hidden_from(db, people["Ann"]) == membership.Hidden((dm,), dm)
    assert membership.hidden_from(db, people["Cy"]).ids == (hiring,)
    assert membership.hidden_from(db, None).ids == (hiring, dm)
    assert membership.hidden_from_ai(db, general).ids == (hiring, dm)  # a public channel's reply
    assert membership.hidden_from_ai(db, hiring).ids == (dm,)  # the private channel's own reply reads it
    later = membership.create_private_channel(db, people["Ann"], "later")
    assert later > membership.hidden_from(db, people["Cy"]).upto or later in membership.hidden_from(db, people["Cy"]).ids
