"""Small file systems that misbehave on purpose: a tmpfs that fills up, a folder the app cannot write, an ext4
that an error turns read-only.

Mounting needs root (CI runs the tests as root). Elsewhere the tests that need a mount skip with the
reason; in CI (CI=true) a missing prerequisite fails instead, so the fault tests cannot vanish quietly.
"""
from __future__ import annotations

import contextlib
import os
import shutil
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


EXT4_SIZE = "64M"  # room for a database, its log and the app's free-space reserve


class Ext4:
    """A loop-mounted ext4 file system (``errors=remount-ro``) and the ways a test makes it refuse writes."""

    def __init__(self, image: Path, folder: Path) -> None:
        self.image, self.folder = image, folder

    def _mount(self) -> None:
        done = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.folder)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _unavailable(f"cannot loop-mount an ext4 image ({done.stderr.strip() or done.returncode})")

    def fail(self) -> None:
        """Record an ext4 error, as a failed disk write does: errors=remount-ro turns it read-only until unmounted.

        On Linux 6.15+ statvfs still calls it writable ("emergency_ro"); every write answers EROFS.
        """
        device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.folder)], capture_output=True,
                                text=True, check=True).stdout.strip()
        trigger = Path("/sys/fs/ext4") / os.path.basename(device) / "trigger_fs_error"
        if not trigger.exists():
            _unavailable(f"this kernel has no {trigger} to inject an ext4 error")
        trigger.write_text("injected by the tests")
        assert subprocess.run(["touch", str(self.folder / "probe")], capture_output=True, check=False).returncode

    def repair(self) -> None:
        """Unmount, check and mount again: how an ext4 that an error turned read-only takes writes again."""
        subprocess.run(["umount", str(self.folder)], check=True)
        done = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, text=True, check=False)
        assert done.returncode < 4, f"e2fsck left errors: {done.stdout}{done.stderr}"  # 1: errors corrected
        self._mount()

    @contextlib.contextmanager
    def read_only(self, folder: Path) -> Iterator[Path]:
        """``folder`` (on this file system) read-only for the block, then writable again.

        A read-only bind mount over the folder itself: `mount -o remount,ro` is refused (EBUSY) while a process
        holds a file open for writing, as DuckDB does. Files opened before keep their writable descriptors.
        """
        subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], check=True)
        try:
            assert os.statvfs(folder).f_flag & os.ST_RDONLY
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def ext4(image: Path, folder: Path) -> Iterator[Ext4]:
    """An ext4 in the file ``image``, loop-mounted at ``folder`` for the block; skip (fail in CI) where it cannot be."""
    if os.geteuid() != 0:
        _unavailable("loop-mounting an ext4 image needs root")
    if not shutil.which("mkfs.ext4") or not shutil.which("e2fsck"):
        _unavailable("mkfs.ext4 and e2fsck (e2fsprogs) are not installed")
    subprocess.run(["truncate", "-s", EXT4_SIZE, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    folder.mkdir(parents=True, exist_ok=True)
    disk = Ext4(image, folder)
    disk._mount()
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-R", "-l", str(folder)], check=False)  # a bind mount too; lazily, if still in use
