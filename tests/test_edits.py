"""Edits and deletes on both backends: revisions kept, tombstones that leave no text anywhere, who may, the index."""
from __future__ import annotations

import json

import pytest
from fake_openai import Script
from test_ai import ai_settings, settled

from core import chat, edits, embeddings, jobs, listing, reactions, replies, search
from core.ai import Responder
from core.embeddings import Embedder, local_provider
from core.errors import NotFound, ValidationError
from core.limits import Limits, RateLimited


@pytest.fixture
def quiet(db):
    return chat.create_channel(db, "quiet", reply_policy="off")


@pytest.fixture
def bob(db):
    return chat.create_user(db, "Bob")


def reply_of(db, message_id):
    return db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [message_id])[0]


def drain(embedder):
    while embedder.run_once():
        pass
    embedder.run_once()


def every_text(db) -> str:
    """Every text the database holds about messages, in one string."""
    parts = []
    for table, columns in [("messages", "content, coalesce(context, ''), coalesce(steps, ''), coalesce(error, '')"),
                           ("message_revisions", "content")]:
        for row in db.rows(f"SELECT {columns} FROM {table}"):
            parts.extend(str(value) for value in row)
    return "\n".join(parts)


# edits -------------------------------------------------------------------------------
def test_an_edit_changes_the_text_in_place_and_keeps_every_earlier_one(db, ann, quiet):
    message_id = chat.send_message(db, quiet, ann, "helo wrld")
    version = chat.channel_version(db, quiet)
    assert edits.edit_message(db, message_id, ann, "hello world") is True
    assert chat.channel_version(db, quiet) != version  # every window's list hears of it
    assert edits.edit_message(db, message_id, ann, "hello world!") is True
    assert edits.edit_message(db, message_id, ann, "hello world!") is False  # the same text: no revision
    message = chat.list_messages(db, quiet)[0]
    assert (message.id, message.content) == (message_id, "hello world!") and message.edited_at is not None
    assert message == chat.read_messages_uncached(db, quiet)[0]  # the cache follows the commit
    assert [r["content"] for r in edits.revisions_of(db, message_id)] == ["helo wrld", "hello world"]
    assert {r["edited_by"] for r in edits.revisions_of(db, message_id)} == {ann}
    item = listing.entry(db, message)
    assert item["edited"] and not item["deleted"] and item["html"] == "<p>hello world!</p>"
    assert chat.load_context(db, quiet) == [{"role": "user", "content": "Ann: hello world!"}]


def test_an_edit_is_checked_like_a_send(db, ann, quiet):
    message_id = chat.send_message(db, quiet, ann, "fine")
    for bad, words in [("", "empty"), ("   ", "empty"), ("\u200b", "no visible"), (42, "must be text"),
                       ("x" * 1_000_001, "too long")]:
        with pytest.raises(ValidationError, match=words):
            edits.edit_message(db, message_id, ann, bad)
    with pytest.raises(NotFound):
        edits.edit_message(db, 999_999, ann, "text")
    assert chat.get_message(db, message_id).content == "fine" and edits.revisions_of(db, message_id) == []


def test_an_edit_drops_the_old_vector_and_search_follows_the_new_text(db, ann, quiet):
    message_id = chat.send_message(db, quiet, ann, "the blue whale is the largest animal")
    embedder = Embedder(db, local_provider())
    drain(embedder)
    assert db.one("SELECT count(*) FROM message_vectors WHERE message_id = ?", [message_id])[0] == 1
    edits.edit_message(db, message_id, ann, "our quarterly budget review moved to Monday")
    assert db.one("SELECT count(*) FROM message_vectors WHERE message_id = ?", [message_id])[0] == 0
    assert db.one("SELECT state FROM embedding_jobs WHERE message_id = ?", [message_id]) == ("pending",)
    drain(embedder)
    assert db.one("SELECT count(*) FROM message_vectors WHERE message_id = ?", [message_id])[0] == 1
    assert [h.message_id for h in search.search_messages(db, "budget review")] == [message_id]
    assert search.search_messages(db, "whale") == []


def test_a_claim_in_flight_never_writes_the_old_texts_vector(db, ann, quiet):
    message_id = chat.send_message(db, quiet, ann, "old words")
    provider = local_provider()
    embeddings.discover(db, provider.name)
    claimed = embeddings.claim(db, provider.name, "worker-1")
    assert [row[2] for row in claimed] == ["old words"]
    edits.edit_message(db, message_id, ann, "new words")
    vector = provider.embed(["old words"])[0]
    assert embeddings.store(db, provider.name, "worker-1", [(message_id, quiet, vector)]) == 0
    assert db.one("SELECT state FROM embedding_jobs WHERE message_id = ?", [message_id]) == ("pending",)


def test_regenerate_asks_again_only_after_an_edit_and_counts_as_an_ask(db, ann, bob):
    general = chat.create_channel(db, "general")
    message_id = chat.send_message(db, general, ann, "what is 2 + 2?")
    reply_id = reply_of(db, message_id)
    job = jobs.claim_next_job(db)
    replies.finish_reply(db, job, "5")
    with pytest.raises(ValidationError, match="not edited since"):
        replies.regenerate_reply(db, reply_id, ann)
    edits.edit_message(db, message_id, ann, "what is 2 + 3?")
    with pytest.raises(ValidationError, match="Only Ann, who asked for this reply"):
        replies.regenerate_reply(db, reply_id, bob)
    with pytest.raises(RateLimited):
        replies.regenerate_reply(db, reply_id, ann, limits=Limits(ai_replies_per_hour=1))  # the send was an ask
    assert replies.regenerate_reply(db, reply_id, ann) is True
    assert chat.get_message(db, reply_id).status == "pending"
    assert db.one("SELECT requested_by, cause FROM ai_jobs WHERE reply_id = ? ORDER BY id DESC LIMIT 1",
                  [reply_id]) == (ann, "retry")
    assert replies.regenerate_reply(db, reply_id, ann) is False  # already asked
    entry = listing.entry(db, chat.get_message(db, reply_id))
    assert entry["trigger"] == message_id


# deletes -----------------------------------------------------------------------------
def test_a_delete_leaves_a_tombstone_and_its_text_nowhere(db, ann, bob, fake_openai):
    general = chat.create_channel(db, "general")
    secret = "the vault code is 7431 swordfish"
    fake_openai.push(Script(text="Noted: the vault code is 7431 swordfish."), Script(text="First answer."),
                     Script(text="Second answer."))
    responder = Responder(db, ai_settings(fake_openai)).start()
    try:
        message_id = chat.send_message(db, general, ann, "a draft")
        edits.edit_message(db, message_id, ann, secret)  # before the reply is read: the AI answers the edited text
        reply_id = reply_of(db, message_id)
        settled(db, reply_id)
        settled(db, reply_of(db, chat.send_message(db, general, bob, "thanks Ann")))
        assert secret in str(fake_openai.requests[-1]["messages"])  # the later reply's request quoted it
        reactions.toggle_reaction(db, message_id, bob, "👀")
        drain(Embedder(db, local_provider()))
        assert edits.delete_message(db, message_id, ann) is True
        assert edits.delete_message(db, message_id, ann) is False
        gone = chat.get_message(db, message_id)
        assert (gone.content, gone.author_id, gone.deleted_by) == ("", ann, ann) and gone.deleted_at is not None
        assert chat.get_message(db, reply_id).deleted_at is not None  # its AI reply went with it
        assert chat.list_messages(db, general, 50) == chat.read_messages_uncached(db, general, 50)
        assert "7431" not in every_text(db) and "swordfish" not in every_text(db)
        assert edits.revisions_of(db, message_id) == [] and reactions.reactions_for(db, general) == {}
        assert search.search_messages(db, "vault code swordfish") == []
        assert db.rows("SELECT * FROM message_vectors WHERE message_id IN (?, ?)", [message_id, reply_id]) == []
        assert db.rows("SELECT * FROM embedding_jobs WHERE message_id IN (?, ?)", [message_id, reply_id]) == []
        settled(db, reply_of(db, chat.send_message(db, general, bob, "what did Ann say?")))
        sent = str(fake_openai.requests[-1]["messages"])
        assert "7431" not in sent and "swordfish" not in sent
        entry = listing.entry(db, gone)
        assert entry["deleted"] and entry["html"] == "" and entry["author"] == "Ann" and entry["reactions"] == []
    finally:
        responder.stop(grace=0)


def test_deleting_a_message_stops_its_reply_still_being_written(db, ann):
    general = chat.create_channel(db, "general")
    message_id = chat.send_message(db, general, ann, "tell me a long story")
    reply_id = reply_of(db, message_id)
    job = jobs.claim_next_job(db)
    assert replies.stream_reply(db, reply_id, "Once upon", job_id=job.id)
    edits.delete_message(db, message_id, ann)
    assert replies.stream_reply(db, reply_id, "Once upon a time", job_id=job.id) is False
    replies.finish_reply(db, job, "Once upon a time, the end.")
    reply = chat.get_message(db, reply_id)
    assert (reply.content, reply.status) == ("", "complete") and reply.deleted_at is not None
    assert db.one("SELECT state FROM ai_jobs WHERE reply_id = ?", [reply_id]) == ("done",)
    with pytest.raises(ValidationError, match="deleted"):
        replies.retry_reply(db, reply_id, ann)


def test_who_may_edit_and_delete(db, ann, bob, quiet):
    general = chat.create_channel(db, "general")
    message_id = chat.send_message(db, general, ann, "mine")
    reply_id = reply_of(db, message_id)
    with pytest.raises(ValidationError, match="Only Ann, who wrote this message, can edit it"):
        edits.edit_message(db, message_id, bob, "theirs now")
    with pytest.raises(ValidationError, match="Only Ann, who wrote this message, can delete it"):
        edits.delete_message(db, message_id, bob)
    with pytest.raises(ValidationError, match="AI replies cannot be edited"):
        edits.edit_message(db, reply_id, ann, "I said so")
    with pytest.raises(ValidationError, match="Only an admin can delete an AI reply"):
        edits.delete_message(db, reply_id, ann)
    with pytest.raises(NotFound):
        edits.delete_message(db, message_id, 999_999)
    assert chat.get_message(db, message_id).content == "mine"
    assert edits.delete_message(db, reply_id, bob, admin=True) is True  # an admin deletes any, on record
    assert chat.get_message(db, reply_id).deleted_by == bob
    assert edits.delete_message(db, message_id, bob, admin=True) is True
    assert chat.get_message(db, message_id).deleted_by == bob
    with pytest.raises(ValidationError, match="was deleted"):
        edits.edit_message(db, message_id, ann, "back")


@pytest.mark.parametrize("verb", ["edit", "delete", "retry", "stop", "regenerate"])
def test_ownership_is_refused_for_another_person_through_every_verb(db, ann, bob, verb):
    general = chat.create_channel(db, "general")
    message_id = chat.send_message(db, general, ann, "Ann's question")
    reply_id = reply_of(db, message_id)
    if verb in ("retry", "regenerate"):
        job = jobs.claim_next_job(db)
        replies.fail_reply(db, job, "The AI service had an error.") if verb == "retry" else replies.finish_reply(db, job, "ok")
        edits.edit_message(db, message_id, ann, "Ann's question, edited")
    act = {
        "edit": lambda: edits.edit_message(db, message_id, bob, "Bob was here"),
        "delete": lambda: edits.delete_message(db, message_id, bob),
        "retry": lambda: replies.retry_reply(db, reply_id, bob),
        "stop": lambda: replies.stop_reply(db, reply_id, bob),
        "regenerate": lambda: replies.regenerate_reply(db, reply_id, bob),
    }[verb]
    before = chat.read_messages_uncached(db, general)
    with pytest.raises(ValidationError, match="Only Ann"):
        act()
    assert chat.read_messages_uncached(db, general) == before


def test_edits_deletes_and_reactions_share_one_limit_per_person(db, ann, bob, quiet):
    limits = Limits(actions_per_minute=3)
    first, second = (chat.send_message(db, quiet, ann, text) for text in ("one", "two"))
    edits.edit_message(db, first, ann, "one!", limits=limits)
    reactions.toggle_reaction(db, second, ann, "👍", limits=limits)
    reactions.toggle_reaction(db, second, ann, "👍", limits=limits)  # taking it back counts too
    with pytest.raises(RateLimited, match="3 times in the last minute"):
        edits.delete_message(db, second, ann, limits=limits)
    assert chat.get_message(db, second).deleted_at is None
    reactions.toggle_reaction(db, second, bob, "👍", limits=limits)  # another person's allowance


def test_a_delete_scrubs_tool_output_that_quoted_it_in_another_channel(db, ann, quiet):
    from core import tools

    secret = "the launch code is 99 red balloons"
    message_id = chat.send_message(db, quiet, ann, secret)
    general = chat.create_channel(db, "elsewhere", reply_policy="off")
    reply_id = chat.write_agent_response(db, general, "Found it.")
    step = tools.call(db, "search_messages", '{"query": "launch code"}', chat.get_channel(db, general))
    assert secret in step["output"]
    db.write(lambda tx: tx.execute("UPDATE messages SET steps = ? WHERE id = ?", [json.dumps([step]), reply_id]))
    edits.delete_message(db, message_id, ann)
    steps = chat.get_message(db, reply_id).steps
    assert "balloons" not in steps and edits.SCRUBBED in steps and f"[id {message_id} " in steps
    assert "balloons" not in every_text(db)
