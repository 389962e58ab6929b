"""One intake process per data directory: a live one is waited for, an orphaned one (its `ctrail
run` gone) is killed, and a stale owner record never gets an unrelated process killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctrail.errors import Unavailable
from ctrail.runtime import intake

HOLDER = """
import fcntl, os, sys, time
from pathlib import Path
lock_dir = Path(sys.argv[1])
lock_dir.mkdir(parents=True, exist_ok=True)
handle = open(lock_dir / ".lock", "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
(lock_dir / "owner").write_text(f"{os.getpid()} {sys.argv[2]}\\n")
print("held", flush=True)
time.sleep(120)
"""


def hold(lock_dir: Path, recorded_parent: int) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(recorded_parent)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    holder.stdout.close()
    return holder


def test_an_orphaned_holder_is_killed_and_the_lock_taken(tmp_path: Path) -> None:
    # Recorded as started by a process that is not its parent: its ctrail run is gone.
    holder = hold(tmp_path / "intake", recorded_parent=os.getpid() + 1_000_000)
    try:
        held = intake._hold_intake_lock(tmp_path / "intake", parent=os.getpid())
        assert holder.wait(timeout=10) == -9
        assert (tmp_path / "intake" / "owner").read_text().split() == [str(os.getpid())] * 2
        held.close()
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_whose_ctrail_run_lives_is_waited_for(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "PREVIOUS_INTAKE_WAIT_SECS", 0.5)
    holder = hold(tmp_path / "intake", recorded_parent=os.getpid())     # we are its parent
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"another intake process still runs .*pid {holder.pid}"):
            intake._hold_intake_lock(tmp_path / "intake", parent=os.getpid())
        assert time.monotonic() - started >= 0.5
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_owner_record_kills_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record names a live process that does not hold the lock (a pid since reused)."""
    monkeypatch.setattr(intake, "PREVIOUS_INTAKE_WAIT_SECS", 0.2)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    holder = hold(tmp_path / "intake", recorded_parent=os.getpid())
    (tmp_path / "intake" / "owner").write_text(f"{bystander.pid} {os.getpid() + 1_000_000}\n")
    try:
        with pytest.raises(Unavailable):
            intake._hold_intake_lock(tmp_path / "intake", parent=os.getpid())
        assert bystander.poll() is None and holder.poll() is None
    finally:
        for process in (bystander, holder):
            process.kill()
            process.wait()
