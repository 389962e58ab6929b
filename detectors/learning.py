"""What the first-seen and spike states share: when a rule began learning, on event time, and
a bounded least-recently-seen table whose forgotten entries are counted.

A history rule alerts only once it has learned for `learning_secs` from `since`, the event time
its learning began (the oldest event its backfill read, else its first candidate). `dirty` says
the state changed since its last checkpoint; `evicted` how many entries the bound forgot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LearningState:
    def __init__(self, learning_secs: float) -> None:
        self.learning_secs = learning_secs
        self.since: float | None = None
        self.evicted = 0
        self.dirty = False

    def learning_until(self) -> float | None:
        return None if self.since is None else self.since + self.learning_secs

    def start(self, t: float) -> None:
        """Learning began at event time t, if it had not begun earlier."""
        if self.since is None or t < self.since:
            self.since = t
            self.dirty = True

    def bound(self, entries: OrderedDict[str, Any], limit: int) -> None:
        """Forget the least recently seen of `entries` beyond `limit`, counted in `evicted`."""
        while len(entries) > limit:
            entries.popitem(last=False)
            self.evicted += 1
