"""A real small filesystem for disk-full tests: a tmpfs of a few MiB mounted for the test.

Why tmpfs and not RLIMIT_FSIZE or an LD_PRELOAD shim: a full tmpfs answers ENOSPC exactly as a
full disk does, to every writer at once (our log, SQLite's WAL, the checkpoint files), statvfs
reports its free space, and freeing a file gives the space back; a file-size limit only refuses
one process's growth of one file (EFBIG) and says nothing to statvfs. Mounting needs root (or
CAP_SYS_ADMIN); where the tests run without it they are skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` at `path` (created) for the block; unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the disk-full test needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700",
                              "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave_bytes: int = 0) -> Path:
    """Write a ballast file until the filesystem has at most `leave_bytes` free; returns it."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "ab", buffering=0) as out:
        while free_bytes(directory) > leave_bytes:
            want = min(len(chunk), free_bytes(directory) - leave_bytes)
            try:
                out.write(chunk[:max(want, 1)])
            except OSError:
                break
    return ballast


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize
