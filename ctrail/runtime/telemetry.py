"""Counters per stage, owned by the runner (components only return results)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class StageCounters:
    received: int = 0
    sent: int = 0
    dead_lettered: int = 0
    retries: int = 0


class Telemetry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, StageCounters] = defaultdict(StageCounters)
        self._lags: dict[str, int] = {}
        self._failing: set[str] = set()

    def record(self, stage: str, *, received: int = 0, sent: int = 0,
               dead_lettered: int = 0, retries: int = 0) -> None:
        with self._lock:
            counters = self.stages[stage]
            counters.received += received
            counters.sent += sent
            counters.dead_lettered += dead_lettered
            counters.retries += retries

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: vars(counters).copy() for name, counters in self.stages.items()}

    def set_lag(self, stage: str, lag: int) -> None:
        with self._lock:
            self._lags[stage] = lag

    def lags(self) -> dict[str, int]:
        with self._lock:
            return dict(self._lags)

    def set_failing(self, stage: str, failing: bool) -> None:
        """A stage backing off from a failing dependency is not ready (see /readyz)."""
        with self._lock:
            (self._failing.add if failing else self._failing.discard)(stage)

    def failing(self) -> list[str]:
        with self._lock:
            return sorted(self._failing)
