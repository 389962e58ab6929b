"""The report scheduler on a simulated clock: a job fires on its cron schedule, and runs missed
while ctrail was stopped are caught up exactly once at the next start."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from apscheduler.executors.debug import DebugExecutor

from ctrail.runtime.scheduler import Scheduler
from ctrail.settings import Settings
from tests.scheduler_time import SimulatedClock, simulated_scheduler_time


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    return simulated_scheduler_time(monkeypatch)


@pytest.fixture
def runs() -> list[tuple[str, datetime, datetime]]:
    return []


@pytest.fixture
def start(tmp_path: Path, clock: SimulatedClock, runs: list) -> Iterator[Any]:  # type: ignore[type-arg]
    settings = Settings(data_dir=tmp_path, reports={
        "weekly": {"template": "weekly", "schedule": "0 6 * * 1", "misfire_grace_secs": 864000}})
    started: list[Scheduler] = []
    ran = threading.Event()

    def runner(_settings: Settings, name: str, time_from: datetime, time_to: datetime) -> None:
        runs.append((name, time_from, time_to))
        ran.set()

    def build() -> Scheduler:
        scheduler = Scheduler(settings, runner, clock, DebugExecutor())
        started.append(scheduler)
        scheduler.start()
        return scheduler
    build.ran = ran  # type: ignore[attr-defined]
    yield build
    for scheduler in started:
        scheduler.stop()


def settle(scheduler: Scheduler, secs: float = 0.5) -> None:
    """Let the scheduler thread process the simulated time (DebugExecutor runs jobs in it)."""
    scheduler.wakeup()
    time.sleep(secs)


def test_a_job_fires_at_its_scheduled_time(start, clock, runs) -> None:  # type: ignore[no-untyped-def]
    scheduler = start()
    settle(scheduler)
    assert runs == []
    assert scheduler.next_run("report:weekly") == datetime(2026, 1, 5, 6, tzinfo=timezone.utc)
    clock.now = datetime(2026, 1, 5, 6, 0, 1, tzinfo=timezone.utc)
    settle(scheduler)
    assert runs == [("weekly", datetime(2025, 12, 29, 6, tzinfo=timezone.utc),
                     datetime(2026, 1, 5, 6, tzinfo=timezone.utc))]
    assert scheduler.next_run("report:weekly") == datetime(2026, 1, 12, 6, tzinfo=timezone.utc)


def test_runs_missed_while_stopped_are_caught_up_once(start, clock, runs) -> None:  # type: ignore[no-untyped-def]
    first = start()
    settle(first)
    first.stop()
    clock.now = datetime(2026, 1, 19, 9, 0, tzinfo=timezone.utc)    # two Mondays missed
    second = start()
    settle(second)
    assert [to for _name, _from, to in runs] == [datetime(2026, 1, 19, 6, tzinfo=timezone.utc)]
    assert second.next_run("report:weekly") == datetime(2026, 1, 26, 6, tzinfo=timezone.utc)
    second.stop()
    third = start()                                   # restarting again runs nothing more
    settle(third)
    assert len(runs) == 1
    assert [(job, status) for job, _at, status in third.runs.runs()] == [("report:weekly", "done")]


def test_a_run_already_recorded_is_not_repeated(start, clock, runs) -> None:  # type: ignore[no-untyped-def]
    scheduler = start()
    clock.now = datetime(2026, 1, 5, 6, 30, tzinfo=timezone.utc)
    scheduler.run("report:weekly")
    scheduler.run("report:weekly")                   # e.g. a crash before the store updated
    settle(scheduler)                                 # the scheduler's own thread may claim it
    assert len(runs) == 1
