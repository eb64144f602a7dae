"""Schema history on real DuckDB files: a blank file gets the whole schema, an old file opens under new code."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from core import chat
from core.errors import ValidationError
from core.store import connect
from core.store.duck import DuckMigrator
from core.store.migrations import MIGRATIONS, applied, migrate

ALL_NAMES = [name for name, _ in MIGRATIONS]

# (column, type, nullable) per table, in column order: the whole schema after every migration.
SCHEMA = {
    "migrations": [("name", "VARCHAR", False), ("applied_at", "TIMESTAMP", False)],
    "users": [
        ("id", "BIGINT", False),
        ("name", "VARCHAR", False),
        ("name_key", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("name_skeleton", "VARCHAR", True),
    ],
    "channels": [
        ("id", "BIGINT", False),
        ("name", "VARCHAR", False),
        ("name_key", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("reply_policy", "VARCHAR", True),
        ("persona", "VARCHAR", True),
        ("model", "VARCHAR", True),
        ("look_back", "BOOLEAN", True),
        ("created_by", "BIGINT", True),
        ("name_skeleton", "VARCHAR", True),
        ("kind", "VARCHAR", True),
    ],
    "messages": [
        ("id", "BIGINT", False),
        ("channel_id", "BIGINT", False),
        ("author_id", "BIGINT", True),
        ("content", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("status", "VARCHAR", True),
        ("error", "VARCHAR", True),
        ("updated_at", "TIMESTAMP", True),
        ("stopped", "BOOLEAN", True),
        ("model", "VARCHAR", True),
        ("prompt_tokens", "INTEGER", True),
        ("completion_tokens", "INTEGER", True),
        ("ttft_ms", "DOUBLE", True),
        ("total_ms", "DOUBLE", True),
        ("context", "VARCHAR", True),
        ("steps", "VARCHAR", True),
        ("edited_at", "TIMESTAMP", True),
        ("deleted_at", "TIMESTAMP", True),
        ("deleted_by", "BIGINT", True),
        ("reacted_at", "TIMESTAMP", True),
    ],
    "ai_jobs": [
        ("id", "BIGINT", False),
        ("channel_id", "BIGINT", False),
        ("trigger_id", "BIGINT", False),
        ("reply_id", "BIGINT", False),
        ("state", "VARCHAR", False),
        ("attempts", "INTEGER", False),
        ("created_at", "TIMESTAMP", False),
        ("claimed_at", "TIMESTAMP", True),
        ("finished_at", "TIMESTAMP", True),
        ("lease_until", "TIMESTAMP", True),
        ("owner", "VARCHAR", True),
        ("requested_by", "BIGINT", True),
        ("cause", "VARCHAR", True),
    ],
    "ai_usage": [
        ("id", "BIGINT", False),
        ("kind", "VARCHAR", False),
        ("user_id", "BIGINT", True),
        ("reply_id", "BIGINT", True),
        ("job_id", "BIGINT", True),
        ("model", "VARCHAR", True),
        ("prompt_tokens", "BIGINT", False),
        ("completion_tokens", "BIGINT", False),
        ("estimated", "BOOLEAN", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "identities": [
        ("issuer", "VARCHAR", False),
        ("subject", "VARCHAR", False),
        ("user_id", "BIGINT", False),
        ("email", "VARCHAR", True),
        ("created_at", "TIMESTAMP", False),
    ],
    "message_vectors": [
        ("message_id", "BIGINT", False),
        ("channel_id", "BIGINT", False),
        ("provider", "VARCHAR", False),
        ("seq", "BIGINT", False),
        ("vector", "FLOAT[256]", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "embedding_jobs": [
        ("message_id", "BIGINT", False),
        ("provider", "VARCHAR", False),
        ("state", "VARCHAR", False),
        ("attempts", "INTEGER", False),
        ("claimed_by", "VARCHAR", True),
        ("claimed_at", "TIMESTAMP", True),
        ("error", "VARCHAR", True),
        ("created_at", "TIMESTAMP", False),
    ],
    "search_state": [("name", "VARCHAR", False), ("value", "VARCHAR", False)],
    "memberships": [
        ("channel_id", "BIGINT", False),
        ("user_id", "BIGINT", False),
        ("role", "VARCHAR", False),
        ("joined_at", "TIMESTAMP", False),
        ("added_by", "BIGINT", True),
    ],
    "membership_log": [
        ("id", "BIGINT", False),
        ("channel_id", "BIGINT", False),
        ("user_id", "BIGINT", False),
        ("act", "VARCHAR", False),
        ("by_user", "BIGINT", True),
        ("created_at", "TIMESTAMP", False),
    ],
    "renames": [
        ("id", "BIGINT", False),
        ("user_id", "BIGINT", False),
        ("old_name", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "attachment_blobs": [("sha256", "VARCHAR", False), ("size", "BIGINT", False), ("data", "BLOB", False)],
    "attachments": [
        ("id", "BIGINT", False),
        ("message_id", "BIGINT", False),
        ("channel_id", "BIGINT", False),
        ("uploaded_by", "BIGINT", True),
        ("kind", "VARCHAR", False),
        ("media_type", "VARCHAR", False),
        ("name", "VARCHAR", False),
        ("size", "BIGINT", False),
        ("width", "BIGINT", True),
        ("height", "BIGINT", True),
        ("sha256", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "message_revisions": [
        ("id", "BIGINT", False),
        ("message_id", "BIGINT", False),
        ("content", "VARCHAR", False),
        ("edited_at", "TIMESTAMP", False),
        ("edited_by", "BIGINT", True),
    ],
    "reactions": [
        ("message_id", "BIGINT", False),
        ("user_id", "BIGINT", False),
        ("emoji", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "message_acts": [
        ("id", "BIGINT", False),
        ("user_id", "BIGINT", False),
        ("kind", "VARCHAR", False),
        ("message_id", "BIGINT", False),
        ("created_at", "TIMESTAMP", False),
    ],
}


def schema_of(con) -> dict[str, list[tuple]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    schema: dict[str, list[tuple]] = {}
    for table, column, kind, nullable in rows:
        schema.setdefault(table, []).append((column, kind, nullable == "YES"))
    return schema


def defaults_of(con, table: str) -> dict[str, str | None]:
    rows = con.execute(
        "SELECT column_name, column_default FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()
    return dict(rows)


def test_migrate_blank_creates_whole_schema(tmp_path):
    con = duckdb.connect(str(tmp_path / "blank.duckdb"))
    assert migrate(DuckMigrator(con)) == ALL_NAMES
    assert schema_of(con) == SCHEMA
    assert applied(DuckMigrator(con)) == ALL_NAMES

    primary = con.execute(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
    ).fetchall()
    assert sorted((t, tuple(c)) for t, c in primary) == sorted(
        [("migrations", ("name",)), ("users", ("id",)), ("channels", ("id",)), ("messages", ("id",)), ("ai_jobs", ("id",)),
         ("ai_usage", ("id",)), ("identities", ("issuer", "subject")), ("renames", ("id",)),
         ("message_vectors", ("message_id",)), ("embedding_jobs", ("message_id", "provider")), ("search_state", ("name",)),
         ("attachment_blobs", ("sha256",)), ("attachments", ("id",)),
         ("message_revisions", ("id",)), ("message_acts", ("id",)), ("reactions", ("message_id", "user_id", "emoji")),
         ("memberships", ("channel_id", "user_id")), ("membership_log", ("id",))]
    )
    unique = con.execute(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'UNIQUE'"
    ).fetchall()
    assert sorted((t, tuple(c)) for t, c in unique) == [
        ("channels", ("name_key",)), ("identities", ("user_id",)), ("users", ("name_key",))]
    sequences = {row[0] for row in con.execute("SELECT sequence_name FROM duckdb_sequences()").fetchall()}
    assert sequences == {"users_id_seq", "channels_id_seq", "messages_id_seq", "ai_jobs_id_seq", "ai_usage_id_seq",
                         "renames_id_seq", "message_vectors_seq", "attachments_id_seq", "message_revisions_id_seq",
                         "message_acts_id_seq", "membership_log_id_seq"}

    messages = defaults_of(con, "messages")
    assert "messages_id_seq" in messages["id"]
    assert "complete" in messages["status"]
    assert con.execute(f"SELECT {messages['stopped']}").fetchone() == (False,)
    assert "every" in defaults_of(con, "channels")["reply_policy"]
    assert "public" in defaults_of(con, "channels")["kind"]
    assert defaults_of(con, "ai_jobs")["attempts"] == "0"
    con.close()


def test_migrate_twice_applies_nothing(tmp_path):
    con = duckdb.connect(str(tmp_path / "twice.duckdb"))
    assert migrate(DuckMigrator(con)) == ALL_NAMES
    assert migrate(DuckMigrator(con)) == []
    assert con.execute("SELECT name, count(*) FROM migrations GROUP BY name ORDER BY name").fetchall() == [
        (name, 1) for name in ALL_NAMES
    ]
    con.close()


def test_migrate_in_memory(tmp_path):
    con = duckdb.connect(":memory:")
    assert migrate(DuckMigrator(con)) == ALL_NAMES
    assert schema_of(con) == SCHEMA


def test_connect_migrates_a_blank_file(tmp_path):
    db = connect(str(tmp_path / "fresh.duckdb"))
    assert [row[0] for row in db.rows("SELECT name FROM migrations ORDER BY name")] == ALL_NAMES
    with db.cursor() as cur:
        assert schema_of(cur) == SCHEMA
    db.close()


def build_old_file(path: str) -> None:
    """A file as the first version of the app left it: only the initial migration, with data."""
    con = duckdb.connect(path)
    assert migrate(DuckMigrator(con), MIGRATIONS[:1]) == ["001_initial"]
    when = datetime(2024, 5, 1, 12, 0, 0)
    for name in ("Ann", "Bob"):
        con.execute("INSERT INTO users (name, name_key, created_at) VALUES (?, ?, ?)", [name, name.casefold(), when])
    for name in ("general", "random"):
        con.execute("INSERT INTO channels (name, name_key, created_at) VALUES (?, ?, ?)", [name, name, when])
    rows = [(1, 1, "hello"), (1, None, "Hi Ann, I am the AI."), (1, 2, "hey all"), (2, 2, "quiet in here")]
    for channel_id, author_id, content in rows:
        con.execute(
            "INSERT INTO messages (channel_id, author_id, content, created_at) VALUES (?, ?, ?, ?)",
            [channel_id, author_id, content, when],
        )
    con.close()


def test_old_schema_file_opens_under_new_code(tmp_path):
    path = str(tmp_path / "old.duckdb")
    build_old_file(path)

    db = connect(path)
    assert db.rows("SELECT name, count(*) FROM migrations GROUP BY name ORDER BY name") == [
        (name, 1) for name in ALL_NAMES
    ]
    assert [u.name for u in chat.list_users(db)] == ["Ann", "Bob"]
    channels = chat.list_channels(db)
    assert [(c.name, c.reply_policy, c.persona) for c in channels] == [("general", "every", None), ("random", "every", None)]
    assert db.rows("SELECT DISTINCT kind FROM channels") == [("public",)]  # old channels stay open to all
    assert db.rows("SELECT id, author_id, content, status, error, stopped, prompt_tokens FROM messages ORDER BY id") == [
        (1, 1, "hello", "complete", None, False, None),
        (2, None, "Hi Ann, I am the AI.", "complete", None, False, None),
        (3, 2, "hey all", "complete", None, False, None),
        (4, 2, "quiet in here", "complete", None, False, None),
    ]
    listed = chat.list_messages(db, 1)
    assert [(m.id, m.author_name, m.content, m.status, m.is_ai) for m in listed] == [
        (3, "Bob", "hey all", "complete", False),
        (2, None, "Hi Ann, I am the AI.", "complete", True),
        (1, "Ann", "hello", "complete", False),
    ]
    assert chat.load_context(db, 1) == [
        {"role": "user", "content": "Ann: hello"},
        {"role": "assistant", "content": "Hi Ann, I am the AI."},
        {"role": "user", "content": "Bob: hey all"},
    ]

    # New code works on the migrated file: ids continue after the old rows, defaults fill new rows.
    new_id = chat.send_message(db, 2, 1, "back again")
    assert new_id == 5
    assert db.one("SELECT stopped, status FROM messages WHERE id = ?", [new_id]) == (False, "complete")
    assert db.one("SELECT count(*) FROM ai_jobs WHERE channel_id = 2")[0] == 1
    assert chat.create_user(db, "Cy") == 3
    db.close()

    # Opening again applies nothing new.
    again = connect(path)
    assert again.rows("SELECT name, count(*) FROM migrations GROUP BY name ORDER BY name") == [
        (name, 1) for name in ALL_NAMES
    ]
    assert [m.content for m in chat.list_messages(again, 2)] == ["", "back again", "quiet in here"]
    again.close()


def test_failed_migration_rolls_back_and_keeps_its_error(tmp_path):
    con = duckdb.connect(str(tmp_path / "broken.duckdb"))

    def broken(cur):
        cur.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("step went wrong")

    with pytest.raises(RuntimeError, match="step went wrong"):
        migrate(DuckMigrator(con), [*MIGRATIONS[:1], ("002_broken", broken)])
    assert applied(DuckMigrator(con)) == ["001_initial"]
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'").fetchone() == (0,)
    assert migrate(DuckMigrator(con)) == ALL_NAMES[1:]
    con.close()


def _migrated_before(migration, backend, tmp_path, request):
    """A database of either backend migrated up to (not including) ``migration``, and a way to run SQL on it."""
    before = [name for name, _ in MIGRATIONS].index(migration)
    if backend == "duckdb":
        target = str(tmp_path / "keys.duckdb")
        con = duckdb.connect(target)
        migrate(DuckMigrator(con), MIGRATIONS[:before])
        yield target, lambda sql, params: con.execute(sql, params), con.close
        return
    import psycopg

    from core.store.pg import PgMigrator

    target = request.getfixturevalue("pg_server").create_database()
    with psycopg.connect(target, autocommit=True) as con:
        m = PgMigrator(con)
        migrate(m, MIGRATIONS[:before])
        yield target, m.execute, lambda: None


@pytest.fixture
def before_007(backend, tmp_path, request):
    yield from _migrated_before("007_name_keys", backend, tmp_path, request)


@pytest.fixture
def before_012(backend, tmp_path, request):
    yield from _migrated_before("012_name_skeletons", backend, tmp_path, request)


def test_name_keys_are_recomputed_and_clashes_kept(before_007, caplog):
    """007: keys of names stored under the old rule (casefold only) become the normalised key, on both backends."""
    target, execute, done = before_007
    when = datetime(2024, 5, 1, 12, 0, 0)
    names = ["Ada", "ada\u200b", "ＢＯＢ", "Jose\u0301", "José", "Cy"]  # 2 clashes: Ada/ada+ZWSP, José NFD/NFC
    for name in names:
        execute("INSERT INTO users (name, name_key, created_at) VALUES (?, ?, ?)", [name, name.casefold(), when])
        execute("INSERT INTO channels (name, name_key, created_at) VALUES (?, ?, ?)", [name, name.casefold(), when])
    done()

    with caplog.at_level("WARNING", logger="core.store.migrations"):
        db = connect(target)
    try:
        keys = db.rows("SELECT id, name, name_key FROM users ORDER BY id")
        assert [k for _, _, k in keys] == ["ada", "ada\x012", "bob", "josé", "josé\x015", "cy"]
        assert db.rows("SELECT name_key FROM channels ORDER BY id") == [(k,) for _, _, k in keys]
        assert [u.name for u in chat.list_users(db)][:2] == ["Ada", "ada\u200b"]  # both kept, names untouched
        clashes = [r.getMessage() for r in caplog.records if "compare as one name" in r.getMessage()]
        assert len(clashes) == 4 and "'Ada'" in clashes[0] and "'ada\\u200b'" in clashes[0]
        for name in ("ADA", "Bob", "josé", "Ada\u2060"):
            with pytest.raises(ValidationError, match="already exists"):
                chat.create_user(db, name)
        assert chat.create_user(db, "Dee")
    finally:
        db.close()


def test_name_skeletons_are_stored_and_old_look_alikes_kept(before_012, caplog):
    """012: each name's TR39 skeleton is stored, unique; look-alikes made before the rule both stay, no third joins."""
    target, execute, done = before_012
    when = datetime(2024, 5, 1, 12, 0, 0)
    for name, key in [("Ada", "ada"), ("\u0410da", "\u0430da"), ("Bob", "bob")]:  # a Cyrillic А: made before the rule
        execute("INSERT INTO users (name, name_key, created_at) VALUES (?, ?, ?)", [name, key, when])
        execute("INSERT INTO channels (name, name_key, created_at) VALUES (?, ?, ?)", [name, key, when])
    done()

    with caplog.at_level("WARNING", logger="core.store.migrations"):
        db = connect(target)
    try:
        looks = ["ada", "ada\x012", "bob"]
        assert db.rows("SELECT name_skeleton FROM users ORDER BY id") == [(k,) for k in looks]
        assert db.rows("SELECT name_skeleton FROM channels ORDER BY id") == [(k,) for k in looks]
        assert len([r for r in caplog.records if "look alike" in r.getMessage()]) == 2
        with pytest.raises(ValidationError, match="looks like it"):
            chat.create_user(db, "AD\u0391")  # a Greek Α
        dee = chat.create_user(db, "Dee")
        assert db.one("SELECT name_skeleton FROM users WHERE id = ?", [dee]) == ("dee",)
    finally:
        db.close()


def test_usage_ledger_carries_what_replies_used_before_it(tmp_path):
    """Migration 010: today's budget reads the same after the upgrade, and old jobs say who asked."""
    con = duckdb.connect(str(tmp_path / "before-ledger.duckdb"))
    migrate(DuckMigrator(con), MIGRATIONS[:ALL_NAMES.index("010_usage_ledger")])
    when = datetime(2026, 12, 1, 9, 0)
    con.execute("INSERT INTO users (name, name_key, created_at) VALUES ('Ann', 'ann', ?)", [when])
    con.execute("INSERT INTO channels (name, name_key, created_at) VALUES ('general', 'general', ?)", [when])
    rows = [  # (author, content, status, prompt, completion, context)
        (1, "hello", "complete", None, None, None),
        (None, "Hi Ann", "complete", 30, 5, '[{"role": "user"}]'),
        (1, "again", "complete", None, None, None),
        (None, "half", "error", None, None, "x" * 39),  # no usage: estimated from what was sent and kept
        (1, "third", "complete", None, None, None),
        (None, "", "pending", None, None, None),  # still open: the new code charges it when it runs
    ]
    for author, content, status, prompt, completion, context in rows:
        con.execute(
            "INSERT INTO messages (channel_id, author_id, content, status, prompt_tokens, completion_tokens, context, "
            "created_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            [author, content, status, prompt, completion, context, when],
        )
    for trigger, reply in ((1, 2), (3, 4), (5, 6)):
        con.execute("INSERT INTO ai_jobs (channel_id, trigger_id, reply_id, state, created_at) "
                    "VALUES (1, ?, ?, 'done', ?)", [trigger, reply, when])
    assert migrate(DuckMigrator(con))[0] == "010_usage_ledger"
    ledger = con.execute("SELECT user_id, reply_id, prompt_tokens, completion_tokens, estimated, created_at "
                         "FROM ai_usage ORDER BY reply_id").fetchall()
    assert ledger == [(1, 2, 30, 5, False, when), (1, 4, 10, 1, True, when)]
    assert con.execute("SELECT requested_by, cause FROM ai_jobs ORDER BY id").fetchall() == [(1, "send")] * 3
    con.close()
