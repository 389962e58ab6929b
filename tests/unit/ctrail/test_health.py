"""Heartbeats: fresh while every thread lives, stale once one dies or time passes."""

from __future__ import annotations

import time
from pathlib import Path

from ctrail.runtime.health import STALE_AFTER_SECS, Heartbeat, stale_roles


def test_a_heartbeat_is_fresh_while_alive_and_gone_once_stopped(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path, "enrich", alive=lambda: True, status=lambda: {"stages": {}})
    beat.start()
    deadline = time.monotonic() + 5
    while not beat.path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stale_roles(tmp_path) == (["enrich"], [])
    assert stale_roles(tmp_path, now=time.time() + STALE_AFTER_SECS + 1) == ([], ["enrich"])
    beat.stop()
    assert stale_roles(tmp_path) == ([], [])


def test_a_dead_thread_stops_the_heartbeat(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path, "store", alive=lambda: False, status=lambda: {})
    beat.start()
    time.sleep(0.2)                  # the first beat would be written at once
    assert not beat.path.exists()
    assert stale_roles(tmp_path) == ([], [])
    beat.stop()
