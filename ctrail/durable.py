"""Small durability primitives every stateful part shares: a file replaced atomically, and a
directory owned by one process at a time."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import IO

from ctrail.errors import Unavailable

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """A write refused for want of space (or quota, or a file size limit): it can succeed later."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new content, never a mix:
    temporary file, fsync, rename, fsync of the directory (so the rename itself is durable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)         # a full disk: leave no half file taking space
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(root: Path, in_use: str, wait_secs: float = 0.0) -> IO[str]:
    """Hold `root/.lock` exclusively for as long as the returned file stays open; raises
    Unavailable with `in_use` when another process holds it (for `wait_secs`)."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / ".lock", "a+")
    deadline = time.monotonic() + wait_secs
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise Unavailable(in_use) from None
            time.sleep(0.05)
