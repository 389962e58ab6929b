"""A simulated clock for the report scheduler: APScheduler reads datetime.now() in the
scheduler and in the executor, and our Scheduler takes a clock; all three see the same time,
which a test moves by setting `now`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest

MONDAY_5AM = datetime(2026, 1, 5, 5, 0, tzinfo=timezone.utc)


class SimulatedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def simulated_scheduler_time(monkeypatch: pytest.MonkeyPatch,
                             start: datetime = MONDAY_5AM) -> SimulatedClock:
    sim = SimulatedClock(start)

    class SimulatedDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return sim.now.astimezone(tz) if tz else sim.now.replace(tzinfo=None)

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", SimulatedDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", SimulatedDatetime)
    return sim
