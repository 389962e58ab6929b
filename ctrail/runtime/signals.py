"""Stopping on SIGTERM or SIGINT without taking a lock in the signal handler.

Python runs a signal handler in the main thread, between two bytecodes of whatever it was doing.
A handler that sets a threading.Event (or logs) takes a lock; when the signal lands while the
main thread holds that very lock (in Event.set or Event.wait, or inside the handler for an
earlier signal: a stop and the parent-death signal arriving together), the main thread waits
for itself for ever. An intake process found so had kept its port and its files for 37 minutes
after its `ctrail run` was gone, and its parent-watch thread, blocked on the same Event, never
reached its exit. So the handler only writes the signal's number to a pipe, which takes no
lock, and a thread of its own reads it and does the rest.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Callable, Iterable


def stop_on(signums: Iterable[int], stop: threading.Event,
            said: Callable[[signal.Signals], None] | None = None) -> None:
    """Set `stop` when one of `signums` arrives (after calling `said` with it, e.g. to log);
    from the main thread, once per process."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum: int, _frame: FrameType | None) -> None:
        try:
            os.write(write_end, bytes((signum,)))
        except BlockingIOError:
            pass                    # a full pipe: the stop is on its way already

    def relay() -> None:
        while data := os.read(read_end, 64):
            for signum in data:
                if said is not None:
                    said(signal.Signals(signum))
                stop.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for signum in signums:
        signal.signal(signum, handler)
