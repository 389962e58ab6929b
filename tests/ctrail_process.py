"""`ctrail` as a user runs it, in a subprocess: `ctrail run` for the length of a block, and a
command whose JSON lines are counted (a search's hits, the dead letters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("ctrail")


@contextmanager
def ctrail_running(config: Path, data_dir: Path, env: Mapping[str, str] | None = None
                   ) -> Iterator[subprocess.Popen[str]]:
    """`ctrail run` while the block runs, from when its data directory exists (what the other
    commands read; they refuse a directory that is not there yet); then SIGTERM, which it must
    answer by exiting 0."""
    proc = subprocess.Popen([str(EXE), "run", "--config", str(config), "--data-dir",
                             str(data_dir)], cwd=REPO, env=dict(env or os.environ),
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: data_dir.is_dir() or proc.poll() is not None, timeout=60)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr


def json_lines(config: Path, data_dir: Path, *args: str) -> int:
    """How many JSON lines `ctrail <args> --format json` prints; it must succeed."""
    done = subprocess.run([str(EXE), *args, "--config", str(config), "--data-dir", str(data_dir),
                           "--format", "json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())
