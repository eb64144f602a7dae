"""Browser harness: `streamlit run` in a subprocess on a free port, and Debian's Chromium through Playwright.

Used by tests/test_browser.py and bench/live.py. Everything started here is stopped by the context
managers, also when the body raises: the server's whole process group is terminated, then killed.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's package; never a browser downloaded by `playwright install`
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT = 30.0  # seconds for `streamlit run` to answer /_stcore/health on a busy 2-core machine
STOP_TIMEOUT = 5.0  # seconds a terminated server gets to exit before it is killed
VIEWPORT = {"width": 1280, "height": 800}  # the README screenshot's size


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running `streamlit run <script>`: its url, pid and log file."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path) -> None:
        self.process, self.url, self.log_path = process, url, log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail: int = 4000) -> str:
        """The end of the server's stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the server's process group, then kill it if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):  # anything the server itself started
            os.killpg(self.process.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def streamlit_server(
    db_path: str | Path,
    *,
    openai_base_url: str | None = None,
    refresh_seconds: float = 1.0,
    ai_workers: int = 2,
    script: str = "app.py",
    log_dir: str | Path | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """Run `streamlit run <script>` on 127.0.0.1 with the app's settings in its environment; yield a Server.

    ``port`` reuses a port (a restarted server that open browser windows reconnect to); default a free one.
    ``extra_args`` go to `streamlit run` (e.g. ``--secrets.files PATH``); ``port`` is for a test that must
    know the URL before the server starts (an OIDC redirect URI).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMLIT_"))}
    env.update(
        # Browser tests and benchmarks measure delivery: per-person rate limits (tested in tests/test_limits.py)
        # would refuse their bursts, and every window comes from 127.0.0.1, one address for the live route's
        # per-client cap (tested in tests/test_live_route.py). extra_env may set them again.
        MESSAGES_PER_MINUTE="0",
        AI_REPLIES_PER_HOUR="0",
        RENAMES_PER_HOUR="0",
        CHANNELS_PER_HOUR="0",
        SEARCHES_PER_MINUTE="0",
        ACTIONS_PER_MINUTE="0",
        LIVE_SOCKETS_PER_CLIENT="1000",
        CHAT_DB=str(db_path),
        OPENAI_API_KEY="test-key",
        REFRESH_SECONDS=str(refresh_seconds),
        AI_WORKERS=str(ai_workers),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    if openai_base_url:
        env["OPENAI_BASE_URL"] = openai_base_url
    env.update(extra_env or {})
    port = port or free_port()
    log_path = Path(log_dir or os.path.dirname(os.path.abspath(db_path))) / f"streamlit-{port}.log"
    command = [
        sys.executable, "-m", "streamlit", "run", script,
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", *(extra_args or []),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(server.url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer in {START_TIMEOUT:g} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def chromium() -> Iterator["playwright.sync_api.Browser"]:  # noqa: F821
    """Debian's headless Chromium driven by Playwright; fails (never skips) when it is missing."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# the chat page, as the browser tests drive it --------------------------------------------------------
MESSAGE = "article.chat-message:not(.echo)"  # a stored message in the list (views/messages.js), not a line still sending
INPUT = "[data-testid=stChatInput] textarea"


def type_and_send(page, text: str) -> None:
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def drawn_texts(page) -> list[str]:
    """The inner text of each chat message the page shows, top to bottom."""
    return page.locator(MESSAGE).all_inner_texts()


def wait_page(page, condition, timeout: float = 15.0, what: str = "condition"):
    """Poll ``condition(page)`` every 50 ms until it is truthy (returned), or fail saying what the page shows."""
    deadline = time.monotonic() + timeout
    while not (value := condition(page)):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; the page shows {drawn_texts(page)}")
        page.wait_for_timeout(50)
    return value
