"""The move command: a DuckDB file copied into an empty Postgres database, ids and sequences kept right."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import accounts, chat, edits, jobs, membership, reactions, replies
from core.embeddings import Embedder, local_provider
from core.errors import ValidationError
from core.move import move
from core.store import connect

ROOT = Path(__file__).resolve().parent.parent


def seeded_file(path: str, messages: int) -> dict:
    db = connect(path)
    try:
        users = [chat.create_user(db, name) for name in ("Ann", "Bob", "Zoë 🚀")]
        channels = [chat.create_channel(db, "general"), chat.create_channel(db, "quiet", reply_policy="off")]
        for i in range(messages):
            chat.send_message(db, channels[i % 7 == 0], users[i % 3], f"message {i} 'quoted' %s ? \\n {'é' * (i % 5)}")
        job = jobs.claim_next_job(db)
        replies.stream_reply(db, job.reply_id, "half an answer", job_id=job.id)
        replies.fail_reply(db, job, "The AI service had an error (HTTP 500). Try again.", "half an answer")
        first, second = (row[0] for row in db.rows(
            "SELECT id FROM messages WHERE author_id IS NOT NULL ORDER BY id LIMIT 2"))
        edits.edit_message(db, first, users[0], "an edited message")  # a revision, an act
        edits.delete_message(db, second, users[1])  # a tombstone
        reactions.toggle_reaction(db, first, users[1], "🎉")
        reactions.toggle_reaction(db, first, users[2], "👍")
        accounts.user_for(db, accounts.Identity("https://issuer.example", "dee", "dee@example.com", True, "Dee"))
        hiring = membership.create_private_channel(db, users[0], "hiring")  # kinds and memberships move too
        membership.invite(db, users[0], hiring, users[1])
        chat.send_message(db, membership.open_direct(db, users[1], [users[2]]), users[1], "just us")
        embedder = Embedder(db, local_provider())
        while embedder.run_once():  # search's vectors and state move too
            pass
        embedder.run_once()
        tables = ("users", "channels", "messages", "ai_jobs", "identities", "message_vectors", "embedding_jobs",
                  "search_state", "message_revisions", "reactions", "message_acts", "memberships", "membership_log")
        return {table: db.rows(f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}
    finally:
        db.close()


def test_move_copies_every_row_and_new_rows_get_fresh_ids(tmp_path, pg_server):
    source = str(tmp_path / "chat.duckdb")
    before = seeded_file(source, 2000)
    target = pg_server.create_database()
    moved = {m.table: m.rows for m in move(source, target)}
    assert {table: moved[table] for table in before} == {table: len(rows) for table, rows in before.items()}
    assert all(rows == 0 for table, rows in moved.items() if table not in before)  # e.g. search's, empty here
    db = connect(target)
    try:
        for table, rows in before.items():
            after = db.rows(f"SELECT * FROM {table} ORDER BY 1, 2")
            if table == "message_vectors":  # FLOAT[256] -> REAL[]: the same float32 values
                assert np.array_equal(np.array([r[4] for r in after], np.float32), np.array([r[4] for r in rows], np.float32))
                after, rows = [r[:4] + r[5:] for r in after], [r[:4] + r[5:] for r in rows]
            assert after == rows, table
        general = before["channels"][0][0]
        newest = max(row[0] for row in before["messages"])
        new_id = chat.send_message(db, general, before["users"][0][0], "first message on Postgres")
        assert new_id > newest
        assert chat.create_user(db, "Cy") > max(row[0] for row in before["users"])
        edits.edit_message(db, new_id, before["users"][0][0], "edited on Postgres")  # revisions get fresh ids
        assert db.one("SELECT max(id) FROM message_revisions")[0] > max(r[0] for r in before["message_revisions"])
        embedder = Embedder(db, local_provider())
        embedder.run_once()  # the new message's vector is numbered after the moved ones
        assert db.one("SELECT seq FROM message_vectors WHERE message_id = ?", [new_id])[0] > len(before["message_vectors"])
        assert [m.id for m in chat.list_messages(db, general)][1] == new_id  # under its pending AI reply
        with pytest.raises(ValidationError, match="already exists"):
            chat.create_user(db, "ann")  # the moved names still guard uniqueness ignoring case
        assert db.one("SELECT count(*) FROM users WHERE name_skeleton IS NULL") == (0,)  # 012's column moved too
        with pytest.raises(ValidationError, match="looks like it"):
            chat.create_user(db, "\u0410nn")  # and look-alikes (a Cyrillic А)
        hiring = next(row[0] for row in before["channels"] if row[1] == "hiring")
        assert not membership.can_read(db, before["users"][2][0], hiring)  # still private after the move
        assert membership.can_read(db, before["users"][1][0], hiring)
        membership.leave(db, before["users"][1][0], hiring)  # the log's ids continue past the moved ones
        assert db.one("SELECT max(id) FROM membership_log")[0] == len(before["membership_log"]) + 1
    finally:
        db.close()


def test_move_refuses_a_target_that_is_not_empty(tmp_path, pg_url):
    source = str(tmp_path / "chat.duckdb")
    seeded_file(source, 10)
    db = connect(pg_url)
    chat.create_user(db, "Already here")
    db.close()
    with pytest.raises(ValidationError, match="not empty: its table users has 1 rows"):
        move(source, pg_url)
    db = connect(pg_url)
    try:
        assert db.one("SELECT count(*) FROM messages") == (0,)  # nothing was copied
    finally:
        db.close()


def test_move_command_line_says_what_it_did(tmp_path, pg_server):
    source = str(tmp_path / "chat.duckdb")
    rows = len(seeded_file(source, 20)["messages"])
    target = pg_server.create_database()
    done = subprocess.run([sys.executable, "-m", "core.move", source, target], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"messages: {rows} rows" in done.stdout
    again = subprocess.run([sys.executable, "-m", "core.move", source, target], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr.startswith("Nothing was moved: ") and "not empty" in again.stderr


def test_move_reads_a_file_whose_path_needs_quoting(tmp_path, pg_server):
    folder = tmp_path / "it's a \"folder\" ü 🚀"  # ATTACH takes no parameter: the path is a quoted literal
    folder.mkdir()
    source = str(folder / "chat.duckdb")
    before = seeded_file(source, 5)
    moved = {m.table: m.rows for m in move(source, pg_server.create_database())}
    assert {table: moved[table] for table in before} == {table: len(rows) for table, rows in before.items()}
