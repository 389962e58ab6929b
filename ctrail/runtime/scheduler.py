"""The scheduler inside `ctrail run`: configured reports on their cron schedules (each, once
rendered, queued in the notify outbox for the receivers in its `deliver_to`), and the evidence
archive's sealing and expiry.

APScheduler 3 with its documented persistent store (SQLAlchemyJobStore over
DATA_DIR/scheduler.sqlite3): a job's next run time survives a restart, so a run that fell due
while ctrail was stopped is found at the next start and, with coalesce=True, run once (not once
per missed occurrence) when it is no older than the report's misfire_grace_secs.
A job is left as stored when its schedule is unchanged; re-adding it would move its next run
time past the missed one and lose the catch-up.

APScheduler runs a job at most once per due time, but a crash between a report's run and the
job store's update could repeat it; so every run is first recorded in the `report_runs` table,
keyed by report name and scheduled time, and a run already recorded is skipped.

Each report run and each expiry is also recorded in our own audit trail, like the same command
run by hand; on the local bus, which this process holds, the record goes to the audit spool and
this process's own pickup (ctrail.audit.spool) publishes it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ctrail.audit.trail import record
from ctrail.errors import Unavailable
from ctrail.runtime.evidence_watch import EvidenceWatch
from ctrail.settings import Settings
from sinks.reports import cron_trigger

log = logging.getLogger(__name__)
JOB_FUNC = "ctrail.runtime.scheduler:run_job"
SEAL_INTERVAL_SECS = 60
ReportRunner = Callable[[Settings, str, datetime, datetime], Any]
_ACTIVE: list["Scheduler"] = []          # the process's scheduler, for run_job to find


def default_runner(settings: Settings, name: str, time_from: datetime, time_to: datetime) -> Any:
    from sinks.reports.run import run_report
    return run_report(settings, name, time_from, time_to, deliver=True)


def run_job(job_id: str) -> None:
    """What the job store names (a text reference survives restarts; a bound method would not)."""
    if _ACTIVE:
        _ACTIVE[-1].run(job_id)


def last_fire_time(trigger: BaseTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The latest time `trigger` fired at or before `now` (within `lookback`)."""
    fire, latest = trigger.get_next_fire_time(None, now - lookback), None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return latest


class RunLog:
    """report_runs(job, scheduled): the first claim of a scheduled run wins.

    One connection serves the scheduler's thread and callers of Scheduler.run, under a lock:
    sqlite3 reads a statement's rowcount from the connection after the step, so another
    thread's statement in between would make a won claim look lost (or the reverse)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS report_runs (job TEXT NOT NULL, scheduled "
                         "TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, status TEXT, "
                         "PRIMARY KEY (job, scheduled))")

    def claim(self, job: str, scheduled: datetime, now: datetime) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO report_runs (job, scheduled, started) VALUES (?, ?, ?)",
                (job, scheduled.isoformat(), now.isoformat()))
            return cursor.rowcount == 1

    def finish(self, job: str, scheduled: datetime, now: datetime, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE report_runs SET finished = ?, status = ? WHERE job = ? AND "
                             "scheduled = ?", (now.isoformat(), status, job, scheduled.isoformat()))

    def runs(self) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return self._db.execute("SELECT job, scheduled, status FROM report_runs ORDER BY "
                                    "scheduled").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Scheduler:
    def __init__(self, settings: Settings, runner: ReportRunner = default_runner,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 executor: Any = None) -> None:
        self.settings = settings
        self.runner = runner
        self.clock = clock
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = settings.data_dir / "scheduler.sqlite3"
        self.runs = RunLog(path)
        self.evidence_watch = EvidenceWatch()
        self._aps = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}")},
            executors={"default": executor or ThreadPoolExecutor(1)},   # one job at a time
            job_defaults={"coalesce": True, "max_instances": 1}, timezone=timezone.utc)

    def wanted(self) -> dict[str, tuple[BaseTrigger, int]]:
        """Job id -> (trigger, misfire grace in seconds), from the configuration."""
        jobs = {f"report:{name}": (cron_trigger(config.schedule),
                                   config.misfire_grace_secs)
                for name, config in self.settings.reports.items() if config.schedule}
        if self.settings.evidence is not None:
            jobs["evidence:seal"] = (IntervalTrigger(seconds=SEAL_INTERVAL_SECS), 60)
            jobs["evidence:expire"] = (cron_trigger(
                self.settings.evidence.expire_schedule), 86400)
        return jobs

    def start(self) -> None:
        _ACTIVE.append(self)
        self._aps.start(paused=True)        # reconcile the stored jobs before any runs
        wanted = self.wanted()
        for job in self._aps.get_jobs():
            if job.id not in wanted:
                job.remove()
        for job_id, (trigger, grace) in wanted.items():
            stored = self._aps.get_job(job_id)
            if stored is not None and str(stored.trigger) == str(trigger):
                stored.modify(misfire_grace_time=grace)
            else:
                self._aps.add_job(JOB_FUNC, trigger, args=[job_id], id=job_id,
                                  name=job_id, replace_existing=True, misfire_grace_time=grace)
        self._aps.resume()
        log.info("The scheduler is running.", extra={"jobs": sorted(wanted)})

    def wakeup(self) -> None:
        self._aps.wakeup()

    def next_run(self, job_id: str) -> datetime | None:
        job = self._aps.get_job(job_id)
        return None if job is None else job.next_run_time

    def run(self, job_id: str) -> None:
        kind, _, name = job_id.partition(":")
        try:
            if kind == "report":
                self._run_report(job_id, name)
            else:
                self._run_evidence(name)
        except Exception:
            log.exception("A scheduled job failed.", extra={"job": job_id})

    def _run_report(self, job_id: str, name: str) -> None:
        config = self.settings.reports[name]
        trigger = cron_trigger(config.schedule or "")
        now = self.clock()
        scheduled = last_fire_time(trigger, now, timedelta(seconds=config.misfire_grace_secs))
        if scheduled is None or not self.runs.claim(job_id, scheduled, now):
            log.info("A report run was already done.", extra={"job": job_id})
            return
        status = "failed"
        time_from = scheduled - timedelta(days=config.period_days)
        try:
            self.runner(self.settings, name, time_from, scheduled)
            status = "done"
        finally:
            self.runs.finish(job_id, scheduled, self.clock(), status)
        record(self.settings, "report-run", {"report": name, "scheduled": True,
                                             "from": time_from.isoformat(),
                                             "to": scheduled.isoformat()})

    def _run_evidence(self, action: str) -> None:
        from sinks.evidence.archive import EvidenceArchive
        from sinks.evidence.retention import expire

        assert self.settings.evidence is not None
        try:
            archive = EvidenceArchive.open_shared(self.settings.evidence, self.settings.data_dir)
        except Unavailable:
            return                  # another process writes the archive and seals it
        try:
            if action == "seal":
                self.evidence_watch.seal(archive)      # CT-OPS-003 hears of a failure
                archive.catch_up()
            else:
                result = expire(archive)
                log.info("Evidence expiry ran.", extra={"deleted": result.deleted,
                                                        "held": result.held})
                # A retention action like `ctrail evidence expire`'s, by the schedule.
                record(self.settings, "evidence-expire", {
                    "scheduled": True, "deleted": result.deleted,
                    "held": {str(seq): hold for seq, hold in result.held.items()}})
        finally:
            archive.close()

    def stop(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=True)
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self.runs.close()
