"""Heartbeats: a long-running process proves it is alive by rewriting a small file.

`ctrail run` and `ctrail worker` write DATA_DIR/health/<role>.json every few seconds while
every one of their threads is alive; `ctrail health` (a container's health check) reads it.
A file rather than an HTTP endpoint, so that no port is opened just to say "alive".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Final, Iterable

import orjson

INTERVAL_SECS: Final = 5.0
STALE_AFTER_SECS: Final = 60.0
log = logging.getLogger(__name__)


def health_dir(data_dir: Path) -> Path:
    return data_dir / "health"


class Heartbeat:
    """Rewrites DATA_DIR/health/ROLE.json (atomically) while `alive()` holds."""

    def __init__(self, data_dir: Path, role: str, alive: Callable[[], bool],
                 status: Callable[[], dict[str, Any]]) -> None:
        self.path = health_dir(data_dir) / f"{role}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._alive = alive
        self._status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)          # a stopped process is not "alive"

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._alive():                       # a dead thread stops the heartbeat
                try:
                    self._beat()
                except OSError as exc:              # a full disk: beat again next time
                    log.warning("Cannot write the heartbeat.", extra={"error": str(exc)})
            self._stop.wait(INTERVAL_SECS)

    def _beat(self) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_bytes(orjson.dumps({"time": time.time(), "pid": os.getpid(), **self._status()}))
        temp.replace(self.path)


def stale_roles(data_dir: Path, now: float | None = None) -> tuple[list[str], list[str]]:
    """(fresh, stale) roles of the heartbeat files in the data directory."""
    now = time.time() if now is None else now
    fresh: list[str] = []
    stale: list[str] = []
    for path in sorted(health_dir(data_dir).glob("*.json")):
        try:
            beat = orjson.loads(path.read_bytes())["time"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            beat = 0.0
        (fresh if now - beat <= STALE_AFTER_SECS else stale).append(path.stem)
    return fresh, stale


def all_alive(threads: Iterable[threading.Thread]) -> bool:
    return all(thread.is_alive() for thread in threads)
