"""A disk that turns read-only under the running app: writes are refused in a sentence before DuckDB tries
them (a failed commit can abort DuckDB 1.5.5's process), reads go on, and writes work again once it is writable.

Real parts: a loop-mounted ext4 file system (tests/faultfs.py), made read-only by an injected ext4 error
(``errors=remount-ro``: read-only until it is unmounted and checked) or by a read-only bind mount over the
database's folder (lifted while the app runs). Needs root and a loop device; skipped with the reason elsewhere.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import pytest

from core import chat
from core.errors import StorageError
from core.store import connect

ROOT = Path(__file__).resolve().parent.parent
SAID = "could not be written: the file system is read-only. Nothing was saved."
CHILD_TIMEOUT = 120  # seconds for the child below on a busy machine


@pytest.fixture
def disk(tmp_path):
    """A fresh 64 MB ext4 at tmp_path/disk, unmounted after the test whatever happens."""
    from faultfs import ext4

    with ext4(tmp_path / "ext4.img", tmp_path / "disk") as mounted:
        yield mounted


def _seed(path: Path) -> tuple[int, int]:
    db = connect(str(path))
    try:
        ann, quiet = chat.create_user(db, "Ann"), chat.create_channel(db, "quiet", reply_policy="off")
        chat.send_message(db, quiet, ann, "before")
        return ann, quiet
    finally:
        db.close()


def _contents(db, channel_id) -> list[str]:
    return [m.content for m in reversed(chat.list_messages(db, channel_id, limit=50))]


# core ------------------------------------------------------------------------------------------------
CHILD = """
import sys
sys.path.insert(0, {root!r})
from core import chat, jobs, replies
from core.errors import StorageError
from core.store import connect, duck
if sys.argv[2] == "unchecked":
    duck.DuckDatabase._check_disk = lambda self: None
db = connect(sys.argv[1])
ann, busy = chat.create_user(db, "Ann"), chat.create_channel(db, "busy")
chat.send_message(db, busy, ann, "hello")
job = jobs.claim_next_job(db)
replies.stream_reply(db, job.reply_id, "word ", job_id=job.id)
print("ready", flush=True)
sys.stdin.readline()  # the disk fails meanwhile
writes = [lambda: replies.stream_reply(db, job.reply_id, "word word ", job_id=job.id),  # an UPDATE: DuckDB aborts
          lambda: chat.send_message(db, busy, ann, "during"),
          lambda: replies.finish_reply(db, job, "word word word"),
          lambda: chat.create_channel(db, "new", reply_policy="off")]
for write in writes:
    try:
        write()
        print("stored", flush=True)
    except StorageError as error:
        print("refused:", error, flush=True)
print("checkpoint:", db.checkpoint(), flush=True)
print("read:", [m.content for m in chat.read_messages_uncached(db, busy, limit=10)], flush=True)
print("alive", flush=True)
"""


def _run_child(disk, name: str, checked: bool) -> subprocess.CompletedProcess:
    """Run CHILD on a database at ``disk``; fail the disk once the child is ready; return how it ended."""
    script = CHILD.format(root=str(ROOT))
    command = [sys.executable, "-c", script, str(disk.folder / name), "checked" if checked else "unchecked"]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()[-2000:]
        disk.fail()
        out, err = child.communicate("go\n", timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_a_commit_on_a_disk_an_error_turned_read_only_aborts_duckdb_unless_the_app_refuses_it(disk):
    """The issue's crash: DuckDB 1.5.5 aborts the process when a commit's log write hits a read-only disk."""
    unchecked = _run_child(disk, "unchecked.duckdb", checked=False)
    assert unchecked.returncode == -signal.SIGABRT, (unchecked.stdout, unchecked.stderr[-2000:])
    assert "FatalException" in unchecked.stderr and "alive" not in unchecked.stdout
    disk.repair()
    checked = _run_child(disk, "checked.duckdb", checked=True)
    lines = checked.stdout.splitlines()
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert len(lines) == 7 and all(line.startswith("refused: ") and SAID in line for line in lines[:4]), lines
    assert lines[4:] == ["checkpoint: False", "read: ['word ', 'hello']", "alive"]
    assert "writes refused (Read-only file system)" in checked.stderr  # logged once, when it started
    assert checked.stderr.count("writes refused") == 1


def test_a_disk_an_error_turned_read_only_keeps_reads_and_console_snapshots_until_it_is_repaired(disk):
    path = disk.folder / "chat.duckdb"
    ann, quiet = _seed(path)
    db = connect(str(path))
    try:
        chat.send_message(db, quiet, ann, "in the log")  # not checkpointed yet: a snapshot copies the log
        disk.fail()
        for _ in range(3):
            with pytest.raises(StorageError) as caught:
                chat.send_message(db, quiet, ann, "while read-only")
        said = str(caught.value)
        assert said == (f"The database {str(path)!r} {SAID} Make it writable again, or point CHAT_DB at a file "
                        "on a writable disk.")
        assert _contents(db, quiet) == ["before", "in the log"]
        with db.console_source() as (source, _):  # the Tables page's SQL console reads a snapshot
            snapshot = duckdb.connect(source["duckdb"], read_only=True)
            assert snapshot.execute("SELECT count(*) FROM messages").fetchone() == (2,)
            snapshot.close()
        assert _contents(db, quiet) == ["before", "in the log"]  # DuckDB was not stopped by a failed checkpoint
    finally:
        db.close()
    disk.repair()  # the kernel keeps this read-only until it is unmounted: the app must let go of the file
    db = connect(str(path))
    try:
        chat.send_message(db, quiet, ann, "after the repair")
        assert _contents(db, quiet) == ["before", "in the log", "after the repair"]
    finally:
        db.close()


def test_a_folder_made_read_only_refuses_writes_until_it_is_writable_again(disk, caplog):
    folder = disk.folder / "data"
    folder.mkdir()
    ann, quiet = _seed(folder / "chat.duckdb")
    db = connect(str(folder / "chat.duckdb"))
    caplog.set_level(logging.WARNING, logger="core.store.duck")
    try:
        with disk.read_only(folder):
            with pytest.raises(StorageError, match=SAID):
                chat.send_message(db, quiet, ann, "while read-only")
            with pytest.raises(StorageError, match=SAID):
                chat.create_channel(db, "new", reply_policy="off")
            assert _contents(db, quiet) == ["before"]
            assert db.checkpoint() is False
        chat.send_message(db, quiet, ann, "after")  # the same connection: no reopen, no restart
        assert _contents(db, quiet) == ["before", "after"]
        assert db.checkpoint() is True
    finally:
        db.close()
    logged = [r.getMessage() for r in caplog.records]
    assert sum("writes refused (Read-only file system)" in line for line in logged) == 1, logged
    assert sum("takes writes again" in line for line in logged) == 1, logged


# a real server -----------------------------------------------------------------------------------------
INPUT = "[data-testid=stChatInput] textarea"
MESSAGE = "article.chat-message:not(.echo)"  # a stored message in the list (views/messages.js), not a line still sending
NOT_SENT = "[data-testid=stAlert]:has-text('was not sent')"


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as response:
        return response.status == 200


def _open(browser, url: str, channel_id: int, texts: list[str]):
    """A window on the channel, once it shows ``texts`` (newest last)."""
    from browser import VIEWPORT, wait_page

    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{url}/?channel={channel_id}")
    page.wait_for_selector(f"{INPUT}:not([disabled])", timeout=30_000)
    wait_page(page, lambda p: all(t in " ".join(p.locator(MESSAGE).all_inner_texts()) for t in texts),
              timeout=30, what=f"the messages {texts}")
    return page


def _refused(page, app) -> str:
    """Send while the disk is read-only: the page says it was not sent and why; the server lives on."""
    from browser import type_and_send

    type_and_send(page, "while read-only")
    page.wait_for_selector(NOT_SENT, timeout=15_000)
    said = page.locator(NOT_SENT).first.inner_text()
    assert page.input_value(INPUT) == "while read-only"  # back in the box, to send again
    assert app.process.poll() is None and _healthy(app.url), app.log()
    return said


def _stored(path: Path) -> list[str]:
    db = connect(str(path))
    try:
        return [content for (content,) in db.rows("SELECT content FROM messages ORDER BY id")]
    finally:
        db.close()


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    with chromium() as b:
        yield b


@pytest.mark.browser
def test_a_server_whose_disk_turns_read_only_refuses_sends_and_stores_them_once_it_is_writable(disk, browser, tmp_path):
    from browser import streamlit_server, type_and_send, wait_page

    folder = disk.folder / "data"
    folder.mkdir()
    path = folder / "chat.duckdb"
    _, quiet = _seed(path)
    with streamlit_server(path, log_dir=tmp_path) as app:  # its log off the disk that turns read-only
        page = _open(browser, app.url, quiet, ["before"])
        with disk.read_only(folder):
            said = _refused(page, app)
            assert "the file system is read-only" in said and "Nothing was saved" in said, said
            page.close()
            page = _open(browser, app.url, quiet, ["before"])  # a fresh window reads
        type_and_send(page, "after")  # writable again, without a restart
        wait_page(page, lambda p: "after" in " ".join(p.locator(MESSAGE).all_inner_texts()), what="the new message")
        log = app.log(tail=10**7)
        page.close()
    assert _stored(path) == ["before", "after"], log
    assert "writes refused (Read-only file system)" in log and "takes writes again" in log


@pytest.mark.browser
def test_a_server_whose_disk_an_error_turned_read_only_keeps_running_and_reading(disk, browser, tmp_path):
    from browser import streamlit_server, type_and_send, wait_page

    path = disk.folder / "chat.duckdb"
    _, quiet = _seed(path)
    with streamlit_server(path, log_dir=tmp_path) as app:
        page = _open(browser, app.url, quiet, ["before"])
        disk.fail()
        said = _refused(page, app)
        assert "the file system is read-only" in said and "Nothing was saved" in said, said
        page.close()
        page = _open(browser, app.url, quiet, ["before"])  # a fresh window reads
        page.close()
        assert app.process.poll() is None and _healthy(app.url)
        log = app.log(tail=10**7)
    assert "terminate called" not in log and "writes refused (Read-only file system)" in log, log
    disk.repair()  # needs the server stopped: the kernel keeps this ext4 read-only until it is unmounted
    with streamlit_server(path, log_dir=tmp_path) as app:
        page = _open(browser, app.url, quiet, ["before"])
        type_and_send(page, "after the repair")
        wait_page(page, lambda p: "after the repair" in " ".join(p.locator(MESSAGE).all_inner_texts()),
                  what="the new message")
        page.close()
    assert _stored(path) == ["before", "after the repair"]
