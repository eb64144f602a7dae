"""The life of an AI reply on a real DuckDB file: claim, stream, finish, fail, stop, retry, recover."""
from __future__ import annotations

import json
import threading
import time

import pytest

from core import chat, jobs, replies, tools
from core.errors import NotFound, ValidationError
from core.jobs import INTERRUPTED, MAX_ATTEMPTS
from core.replies import STOPPED_EMPTY


@pytest.fixture
def general(db):
    return chat.create_channel(db, "general")


def ask(db, channel_id, user_id, text="hello @ai"):
    """Send a message in an answering channel; return (message id, reply id)."""
    message_id = chat.send_message(db, channel_id, user_id, text)
    (reply_id,) = db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [message_id])
    return message_id, reply_id


def job_row(db, reply_id):
    """The reply's newest job (a requeue retires the old row and adds a new one)."""
    return db.one("SELECT state, attempts, claimed_at IS NOT NULL, finished_at IS NOT NULL FROM ai_jobs WHERE reply_id = ? "
                  "ORDER BY id DESC LIMIT 1", [reply_id])


def coherent(db, channel_id):
    """The cached page equals DuckDB's answer."""
    for limit in (10, 50, 60):
        assert chat.list_messages(db, channel_id, limit=limit) == chat.read_messages_uncached(db, channel_id, limit)
    return True


# claiming --------------------------------------------------------------------
def test_claim_takes_the_oldest_pending_job_once(db, ann, general):
    assert jobs.claim_next_job(db) is None
    first, first_reply = ask(db, general, ann, "one")
    second, second_reply = ask(db, general, ann, "two")
    assert jobs.pending_jobs(db) == 2
    job = jobs.claim_next_job(db)
    assert (job.channel_id, job.trigger_id, job.reply_id, job.attempts) == (general, first, first_reply, 1)
    assert job_row(db, first_reply) == ("running", 1, True, False)
    assert jobs.claim_next_job(db).reply_id == second_reply
    assert jobs.claim_next_job(db) is None
    assert jobs.pending_jobs(db) == 0


def test_eight_threads_claim_each_job_exactly_once(db, ann, general):
    expected = {ask(db, general, ann, f"question {i}")[1] for i in range(60)}
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker():
        try:
            start.wait()
            while (job := jobs.claim_next_job(db)) is not None:
                claimed.append(job.reply_id)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(claimed) == sorted(expected)
    assert db.rows("SELECT state, attempts, count(*) FROM ai_jobs GROUP BY state, attempts") == [("running", 1, 60)]


# streaming and finishing -----------------------------------------------------
def test_stream_then_finish(db, ann, general):
    _, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    version = chat.channel_version(db, general)
    assert replies.stream_reply(db, reply_id, "Hel") is True
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content) == ("streaming", "Hel")
    assert chat.channel_version(db, general) != version
    assert chat.list_messages(db, general)[0] == message
    assert replies.stream_reply(db, reply_id, "Hello Ann") is True
    replies.finish_reply(db, job, "Hello Ann!", prompt_tokens=12, completion_tokens=3, ttft_ms=40.5, total_ms=120.25)
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.error, message.stopped) == ("complete", "Hello Ann!", None, False)
    assert (message.prompt_tokens, message.completion_tokens, message.ttft_ms, message.total_ms) == (12, 3, 40.5, 120.25)
    assert job_row(db, reply_id) == ("done", 1, True, True)
    assert replies.stream_reply(db, reply_id, "late chunk") is False  # a closed reply takes no more text
    assert chat.get_message(db, reply_id).content == "Hello Ann!"
    assert coherent(db, general)


def test_fail_keeps_partial_text_and_a_readable_reason(db, ann, general):
    _, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "The answer is")
    replies.fail_reply(db, job, "The AI service closed the stream.", content="The answer is", total_ms=99.0)
    message = chat.get_message(db, reply_id)
    assert (message.status, message.error, message.content, message.total_ms) == (
        "error", "The AI service closed the stream.", "The answer is", 99.0)
    assert job_row(db, reply_id)[0] == "done"
    assert coherent(db, general)


def test_fail_without_content_keeps_what_was_streamed(db, ann, general):
    _, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "partial")
    replies.fail_reply(db, job, "Timed out.")
    assert (chat.get_message(db, reply_id).status, chat.get_message(db, reply_id).content) == ("error", "partial")


def test_record_request_keeps_the_context_and_model(db, ann, general):
    _, reply_id = ask(db, general, ann)
    jobs.claim_next_job(db)
    chat.list_messages(db, general)
    version = chat.channel_version(db, general)
    sent = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Ann: hello @ai"}]
    replies.record_request(db, reply_id, sent, "gpt-4o")
    assert json.loads(db.one("SELECT context FROM messages WHERE id = ?", [reply_id])[0]) == sent
    assert chat.reply_context(db, reply_id) == sent
    assert chat.list_messages(db, general)[0].model == "gpt-4o"  # the cache saw it too
    assert chat.channel_version(db, general) != version
    assert coherent(db, general)


# stopping --------------------------------------------------------------------
def test_stop_keeps_the_partial_text(db, ann, general):
    _, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "Half a thou")
    assert replies.stop_reply(db, reply_id, ann) is True
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.stopped, message.error) == ("complete", "Half a thou", True, None)
    assert replies.stream_reply(db, reply_id, "Half a thought, finished") is False  # the worker learns of the stop
    replies.finish_reply(db, job, "Half a thought, finished", ttft_ms=5.0, total_ms=50.0)
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.stopped) == ("complete", "Half a thou", True)
    assert replies.stop_reply(db, reply_id, ann) is False  # already ended
    assert coherent(db, general)


def test_stop_of_an_empty_pending_reply_is_an_error_with_a_reason(db, ann, general):
    _, reply_id = ask(db, general, ann)
    assert replies.stop_reply(db, reply_id, ann) is True
    message = chat.get_message(db, reply_id)
    assert (message.status, message.error, message.content, message.stopped) == ("error", STOPPED_EMPTY, "", True)
    assert "Stopped" in message.error
    assert job_row(db, reply_id)[0] == "done"  # an unclaimed job never runs
    assert jobs.claim_next_job(db) is None
    assert coherent(db, general)


def test_stop_of_a_user_message_is_refused(db, ann, general):
    message_id, _ = ask(db, general, ann)
    with pytest.raises(ValidationError, match="Only AI replies"):
        replies.stop_reply(db, message_id, ann)
    with pytest.raises(ValidationError, match="Only AI replies"):
        replies.retry_reply(db, message_id, ann)
    with pytest.raises(NotFound, match="Message 9999 not found"):
        replies.stop_reply(db, 9999, ann)


# retrying --------------------------------------------------------------------
def test_retry_of_a_failed_reply_runs_it_again_in_place(db, ann, general):
    message_id, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "oops")
    replies.fail_reply(db, job, "Server error.", content="oops", total_ms=10.0)
    assert replies.retry_reply(db, reply_id, ann) is True
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.error, message.total_ms, message.stopped) == (
        "pending", "", None, None, False)
    assert job_row(db, reply_id) == ("pending", 0, False, False)
    # A new attempt row, asked for by whoever pressed Retry: the ask counts at the time it was made.
    assert db.rows("SELECT state, requested_by, cause FROM ai_jobs ORDER BY id") == [
        ("done", ann, "send"), ("pending", ann, "retry")]
    assert replies.retry_reply(db, reply_id, ann) is False  # a double click does nothing more
    again = jobs.claim_next_job(db)
    assert (again.trigger_id, again.reply_id, again.attempts, again.requested_by) == (message_id, reply_id, 1, ann)
    assert again.id != job.id
    replies.finish_reply(db, again, "Fixed.")
    assert chat.get_message(db, reply_id).status == "complete"
    assert coherent(db, general)


def test_retry_of_a_stopped_reply(db, ann, general):
    _, reply_id = ask(db, general, ann)
    job = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "some")
    replies.stop_reply(db, reply_id, ann)
    assert replies.stream_reply(db, reply_id, "some more") is False  # the worker sees the stop and lets go
    replies.finish_reply(db, job, "some more")
    assert replies.retry_reply(db, reply_id, ann) is True
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.stopped) == ("pending", "", False)
    assert jobs.claim_next_job(db).reply_id == reply_id


def test_retry_of_a_complete_reply_is_refused(db, ann, general):
    _, reply_id = ask(db, general, ann)
    replies.finish_reply(db, jobs.claim_next_job(db), "Done.")
    with pytest.raises(ValidationError, match="only failed or stopped replies can be retried"):
        replies.retry_reply(db, reply_id, ann)
    agent = chat.write_agent_response(db, general, "From the agent")
    with pytest.raises(ValidationError, match="complete"):
        replies.retry_reply(db, agent, ann)
    assert chat.get_message(db, reply_id).content == "Done."


def test_retry_of_a_reply_without_a_job_answers_the_last_user_message(db, ann, general):
    quiet = chat.create_channel(db, "quiet", reply_policy="mention")
    question = chat.send_message(db, quiet, ann, "anyone?")  # no @ai: no reply, no job
    reply_id = db.write(
        lambda tx: tx.one(
            "INSERT INTO messages (channel_id, author_id, content, status, created_at) "
            "VALUES (?, NULL, '', 'streaming', ?) RETURNING id", [quiet, db.clock()]
        )[0]
    )
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 1}  # an orphan, closed
    assert chat.get_message(db, reply_id).error == INTERRUPTED
    assert replies.retry_reply(db, reply_id, ann) is True
    job = jobs.claim_next_job(db)
    assert (job.channel_id, job.trigger_id, job.reply_id) == (quiet, question, reply_id)


# recovering after a crash ----------------------------------------------------
def test_recover_requeues_running_jobs_then_gives_up(db, ann, general):
    _, reply_id = ask(db, general, ann)
    for attempt in range(1, MAX_ATTEMPTS):
        job = jobs.claim_next_job(db)
        assert job.attempts == attempt
        replies.stream_reply(db, reply_id, "partial before the crash")
        assert jobs.recover_interrupted(db, everything=True) == {"requeued": 1, "closed": 0}
        message = chat.get_message(db, reply_id)
        # The text stays in view while it waits, marked for every window, until the new attempt writes.
        assert (message.status, message.content) == ("pending", "partial before the crash")
        assert [step["label"] for step in tools.steps_of(message)] == [jobs.PICKING_UP]
        assert job_row(db, reply_id)[:3] == ("pending", attempt, False)
        assert db.one("SELECT state FROM ai_jobs WHERE id = ?", [job.id]) == ("done",)  # the dead run's row is retired
        assert replies.stream_reply(db, reply_id, "a late write of the dead run", job_id=job.id) is False
        assert chat.get_message(db, reply_id).content == "partial before the crash"
        assert coherent(db, general)
    job = jobs.claim_next_job(db)
    assert job.attempts == MAX_ATTEMPTS
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 1}
    message = chat.get_message(db, reply_id)
    assert (message.status, message.error) == ("error", INTERRUPTED)
    assert "Retry" in message.error
    assert job_row(db, reply_id)[0] == "done"
    assert jobs.claim_next_job(db) is None
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 0}
    assert coherent(db, general)
    assert replies.retry_reply(db, reply_id, ann) is True  # a person can still ask again
    assert jobs.claim_next_job(db).attempts == 1


def test_recover_leaves_pending_jobs_alone(db, ann, general):
    _, reply_id = ask(db, general, ann)
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 0}
    assert chat.get_message(db, reply_id).status == "pending"
    assert job_row(db, reply_id)[:2] == ("pending", 0)


def test_recover_closes_orphan_open_replies(db, ann, general):
    _, reply_id = ask(db, general, ann)
    db.write(lambda tx: tx.execute("UPDATE ai_jobs SET state = 'done' WHERE reply_id = ?", [reply_id]))
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 1}
    assert (chat.get_message(db, reply_id).status, chat.get_message(db, reply_id).error) == ("error", INTERRUPTED)
    assert coherent(db, general)


def test_recover_does_not_rerun_a_reply_stopped_while_running(db, ann, general):
    """The worker died after the person pressed Stop: the kept text must not be run (and billed) again."""
    _, reply_id = ask(db, general, ann)
    jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "kept")
    replies.stop_reply(db, reply_id, ann)
    assert jobs.recover_interrupted(db, everything=True) == {"requeued": 0, "closed": 0}
    assert job_row(db, reply_id)[0] == "done"
    assert jobs.claim_next_job(db) is None
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.stopped) == ("complete", "kept", True)


def test_retry_right_after_stop_does_not_let_the_old_run_write(db, ann, general):
    """Stop, then Retry before the worker's next write: the stopped run must not become the retried reply."""
    _, reply_id = ask(db, general, ann)
    old = jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "old run: Once upon")
    replies.stop_reply(db, reply_id, ann)
    retried = replies.retry_reply(db, reply_id, ann)
    # The old worker, unaware, writes its next chunk and then closes its job.
    old_write = replies.stream_reply(db, reply_id, "old run: Once upon a time", job_id=old.id)
    replies.finish_reply(db, old, "old run: Once upon a time, the end")
    if retried:
        assert not old_write, "the stopped run wrote into the retried reply"
    new = jobs.claim_next_job(db) if retried else None
    if new is None:  # retry was refused while the old run held the job: it works once that run ended
        assert replies.retry_reply(db, reply_id, ann) is True
        new = jobs.claim_next_job(db)
    assert new is not None and new.reply_id == reply_id
    assert replies.stream_reply(db, reply_id, "new run: Hello") is True
    replies.finish_reply(db, new, "new run: Hello Ann")
    assert chat.get_message(db, reply_id).content == "new run: Hello Ann"


# leases (several replicas) -------------------------------------------------------
def test_a_sweep_takes_only_jobs_whose_lease_expired(db, ann, general):
    _, live_reply = ask(db, general, ann)
    _, dead_reply = ask(db, general, ann, "second @ai")
    live = jobs.claim_next_job(db, lease=60, owner="replica-a:1")
    dead = jobs.claim_next_job(db, lease=0.05, owner="replica-b:2")
    replies.stream_reply(db, dead.reply_id, "half", job_id=dead.id)
    time.sleep(0.1)  # replica b died: nobody renews its lease
    assert jobs.recover_interrupted(db, everything=False) == {"requeued": 1, "closed": 0}
    assert job_row(db, live.reply_id)[0] == "running"  # a live replica's reply is never taken over
    assert job_row(db, dead.reply_id)[:2] == ("pending", 1)
    assert replies.stream_reply(db, dead.reply_id, "the dead run wakes up", job_id=dead.id) is False
    assert replies.stream_reply(db, live.reply_id, "the live run goes on", job_id=live.id) is True
    again = jobs.claim_next_job(db, owner="replica-a:1")
    assert (again.reply_id, again.attempts) == (dead.reply_id, 2)


def test_a_process_with_the_same_hostname_and_pid_never_takes_a_live_job(db, ann, general):
    from core.ai import Responder
    from core.config import Settings

    first, second = Responder(db, Settings()), Responder(db, Settings())  # one hostname, one pid
    assert first.owner != second.owner and first.owner.rsplit(":", 1)[0] == second.owner.rsplit(":", 1)[0]
    ask(db, general, ann)
    live = jobs.claim_next_job(db, lease=60, owner=first.owner)
    assert jobs.recover_interrupted(db, everything=False) == {"requeued": 0, "closed": 0}
    assert job_row(db, live.reply_id)[0] == "running"


def test_a_requeued_reply_is_claimed_before_the_ones_queued_after_it(db, ann, general):
    _, first = ask(db, general, ann, "first @ai")
    crashed = jobs.claim_next_job(db, lease=0.05, owner="replica-b")
    later = [ask(db, general, ann, f"later {i} @ai")[1] for i in range(3)]
    time.sleep(0.1)  # replica b died
    assert jobs.recover_interrupted(db, everything=False) == {"requeued": 1, "closed": 0}
    again = jobs.claim_next_job(db)
    assert (again.reply_id, again.attempts) == (crashed.reply_id, 2) and again.reply_id == first
    assert [jobs.claim_next_job(db).reply_id for _ in later] == later


def test_renewed_leases_outlive_the_sweep(db, ann, general):
    ask(db, general, ann)
    job = jobs.claim_next_job(db, lease=0.01)
    jobs.renew_leases(db, [job.id], lease=60)
    assert jobs.recover_interrupted(db, everything=False) == {"requeued": 0, "closed": 0}
    assert job_row(db, job.reply_id)[0] == "running"


# who may stop or retry ---------------------------------------------------------
def test_only_who_asked_or_an_admin_may_stop_or_retry(db, ann, general):
    bob = chat.create_user(db, "Bob")
    _, reply_id = ask(db, general, ann)
    assert replies.asked_by(db, reply_id) == {ann}
    with pytest.raises(ValidationError, match=r"^Only Ann, who asked for this reply, or an admin can stop it\.$"):
        replies.stop_reply(db, reply_id, bob)
    assert chat.get_message(db, reply_id).status == "pending" and job_row(db, reply_id)[0] == "pending"
    assert replies.stop_reply(db, reply_id, bob, admin=True) is True
    with pytest.raises(ValidationError, match=r"^Only Ann, who asked for this reply, or an admin can retry it\.$"):
        replies.retry_reply(db, reply_id, bob)
    assert chat.get_message(db, reply_id).stopped  # refused: nothing changed
    assert replies.retry_reply(db, reply_id, bob, admin=True) is True
    assert replies.asked_by(db, reply_id) == {ann, bob}  # who pressed Retry asked for this attempt, and may stop it
    assert replies.stop_reply(db, reply_id, bob) is True
    assert replies.retry_reply(db, reply_id, ann) is True  # Ann's message still asks: she may retry it
    assert replies.asked_by(db, reply_id) == {ann}
    cy = chat.create_user(db, "Cy")
    with pytest.raises(ValidationError, match="^Only Ann, who asked"):
        replies.stop_reply(db, reply_id, cy)


def test_stop_and_retry_by_an_unknown_person_are_refused(db, ann, general):
    _, reply_id = ask(db, general, ann)
    with pytest.raises(NotFound, match="User 9999 not found"):
        replies.stop_reply(db, reply_id, 9999, admin=True)
    assert chat.get_message(db, reply_id).status == "pending"


def test_retry_in_a_channel_whose_ai_is_off_is_refused(db, ann, general):
    _, reply_id = ask(db, general, ann)
    replies.fail_reply(db, jobs.claim_next_job(db), "Server error.")
    chat.update_channel(db, general, reply_policy="off")
    with pytest.raises(ValidationError, match=r"^The AI does not answer in this channel now"):
        replies.retry_reply(db, reply_id, ann)
    assert chat.get_message(db, reply_id).status == "error" and jobs.pending_jobs(db) == 0


def test_a_picked_up_reply_is_rewritten_from_the_new_attempts_first_write(db, ann, general):
    _, reply_id = ask(db, general, ann)
    jobs.claim_next_job(db)
    replies.stream_reply(db, reply_id, "the old attempt's text")
    jobs.recover_interrupted(db, everything=True)
    job = jobs.claim_next_job(db)
    assert replies.stream_reply(db, reply_id, "New", job_id=job.id)
    message = chat.get_message(db, reply_id)
    assert (message.status, message.content, message.steps) == ("streaming", "New", None)  # replaced at once
    replies.record_steps(db, job, [{"kind": "tool", "label": "Searching"}])
    assert replies.stream_reply(db, reply_id, "New text", job_id=job.id)
    assert [s["label"] for s in tools.steps_of(chat.get_message(db, reply_id))] == ["Searching"]  # its own steps stay
