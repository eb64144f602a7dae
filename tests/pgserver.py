"""A real Postgres server for the tests: Debian's binaries, a cluster in a temp folder, loopback only.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user (Debian's
package creates it) and its commands run through ``runuser``.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile

import psycopg

SETTINGS = (
    # Skipping fsync makes the suite several times faster and loses nothing when only the server process dies
    # (the OS keeps what was written); synchronous_commit stays on, so a crash keeps every reported commit.
    "-c fsync=off -c full_page_writes=off "
    "-c max_connections=300 -c shared_buffers=64MB -c listen_addresses=127.0.0.1"
)


def bin_dir() -> str | None:
    """The newest installed Postgres server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()``, ``url(database)``, ``create_database()``, ``stop()``/``start()`` again, ``cleanup()``."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        if self.bin is None:
            raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.root = tempfile.mkdtemp(prefix="chat-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o755)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions")

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin, tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)

    def start(self) -> "PostgresServer":
        self._run(
            "pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -k {self.root} {SETTINGS}", "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str = "template0") -> str:
        """A new empty database (or a copy of ``template``); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)
