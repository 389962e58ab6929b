"""Waiting in tests for something another thread or process does: one helper for all."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(check: Callable[[], object], timeout: float = 60.0, interval: float = 0.2) -> None:
    """Return once `check()` is true; AssertionError when it is still false after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(interval)
