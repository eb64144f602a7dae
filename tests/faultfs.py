"""Small file systems that misbehave on purpose: a tmpfs that fills up, a folder the app cannot write.

Mounting needs root (CI runs the tests as root). Elsewhere the tests that need a mount skip with the
reason; in CI (CI=true) a missing prerequisite fails instead, so the fault tests cannot vanish quietly.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

BALLAST_CHUNK = 64 * 1024  # bytes written at a time until the disk is full


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the storage-fault tests (as root, allowed to mount tmpfs)")
    pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "4m") at ``folder`` for the block; skip (fail in CI) when that is impossible."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs ({done.stderr.strip() or done.returncode})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a ballast file until the disk holding ``folder`` is full; remove it to give the space back."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (BALLAST_CHUNK, 4096, 1):  # full to the last block, then to the last byte
            with contextlib.suppress(OSError):  # ENOSPC
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return ballast
