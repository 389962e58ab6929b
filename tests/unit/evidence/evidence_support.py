"""Helpers of the evidence tests: events at given times and a simulated clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ctrail.event import Event

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def make_event(n: int, at: datetime, user: str = "alice", dataset: str = "kubernetes.audit"
               ) -> Event:
    return Event.model_validate({
        "@timestamp": at, "user": {"name": user},
        "event": {"id": f"ev{n:05d}", "action": "get", "dataset": dataset,
                  "module": dataset.split(".")[0], "original": f'{{"n": {n}}}', "ingested": at}})


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


