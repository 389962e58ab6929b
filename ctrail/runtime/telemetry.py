"""Counters per stage, owned by the runner (components only return results)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal


@dataclass
class StageCounters:
    received: int = 0
    sent: int = 0
    dead_lettered: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample a component reports at scrape time (see Telemetry.add_source)."""

    name: str                                 # without the ctrail_ prefix
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


class Telemetry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, StageCounters] = defaultdict(StageCounters)
        self._lags: dict[str, int] = {}
        self._failing: set[str] = set()
        self._alerts: Counter[tuple[str, str]] = Counter()
        self._sources: list[Callable[[], Iterable[Sample]]] = []
        self._silent: dict[str, dict[str, bool]] = {}

    def count_alerts(self, alerts: Iterable[tuple[str, str]]) -> None:
        """Alerts raised (after suppression), by (rule id, severity word)."""
        with self._lock:
            self._alerts.update(alerts)

    def alerts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._alerts)

    def add_source(self, source: Callable[[], Iterable[Sample]]) -> None:
        """A component's own figures (e.g. the notify outbox), read at each scrape."""
        with self._lock:
            self._sources.append(source)

    def samples(self) -> list[Sample]:
        with self._lock:
            sources = list(self._sources)
        return [sample for source in sources for sample in source()]

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

    def set_silent(self, status: dict[str, dict[str, bool]]) -> None:
        """Each source heard from, and whether it is silent per clock (CT-OPS-001,
        ctrail.runtime.self_watch): /readyz and /metrics both read this."""
        with self._lock:
            self._silent = {source: dict(clocks) for source, clocks in status.items()}

    def silent(self) -> dict[str, dict[str, bool]]:
        with self._lock:
            return {source: dict(clocks) for source, clocks in self._silent.items()}

    def failing(self) -> list[str]:
        with self._lock:
            return sorted(self._failing)
