"""A burst of SIGTERMs stops a process whose main thread is busy with the very Event the stop
sets (ctrail.runtime.signals). A handler that set the Event itself could land while the main
thread held the Event's lock, and wait for itself for ever: an intake process found so had
kept its port for 37 minutes after its `ctrail run` was gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

CHILD = textwrap.dedent("""
    import signal, sys, threading
    from ctrail.runtime.signals import stop_on
    stop = threading.Event()
    {install}
    print("ready", flush=True)
    while not stop.wait(0.0001):        # the main thread takes and leaves the Event's lock
        pass
    print("stopped", flush=True)
""")
OURS = "stop_on((signal.SIGTERM,), stop)"
# What intake, `ctrail run` and the console did before: the handler sets the Event.
NAIVE = "signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())"


def stopped_by_a_burst(install: str, signals: int = 3000, within_secs: float = 10) -> bool:
    """Whether the child's main loop saw the stop (what it does after is the interpreter's:
    a SIGTERM still arriving while it shuts down may end it by the default action)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(install=install)],
                             stdout=subprocess.PIPE, text=True)
    deadline = threading.Timer(within_secs, child.kill)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        deadline.start()
        for _ in range(signals):
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                break                               # gone already
        return child.stdout.readline() == "stopped\n"
    finally:
        deadline.cancel()
        child.kill()
        child.communicate()                         # and its pipe closed


def test_a_burst_of_stops_stops_the_process() -> None:
    assert all(stopped_by_a_burst(OURS) for _ in range(5))
