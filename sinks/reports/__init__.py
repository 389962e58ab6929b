"""Audit reports: `weekly`, `user-activity` and `compliance`, rendered to self-contained HTML
(inline SVG charts), Markdown and CSV from whichever store is configured (Store.search), on a
schedule inside `ctrail run` (ctrail/runtime/scheduler.py) or now (`ctrail report run`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
TEMPLATES: Final = ("weekly", "user-activity", "compliance")
Format = Literal["html", "md", "csv"]


class ReportConfig(BaseModel):
    """One report: what to render, when, and where to put it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: Literal["weekly", "user-activity", "compliance"] = Field(
        description="Which report: weekly, user-activity or compliance.")
    schedule: str | None = Field(
        None, description="Cron expression (minute hour day month weekday, UTC), e.g. "
                          "'0 6 * * 1'; rendered only on demand when absent.")
    out_dir: Path | None = Field(None, description="Default DATA_DIR/reports/NAME.")
    formats: tuple[Format, ...] = Field(("html", "md", "csv"), min_length=1)
    period_days: PositiveInt = Field(7, description="A scheduled run covers this many days "
                                                    "up to its scheduled time.")
    misfire_grace_secs: PositiveInt = Field(
        7 * 86400, description="A run missed while ctrail was stopped is caught up (once) at "
                               "the next start if no older than this.")
    gap_hours: PositiveInt = Field(6, description="compliance: name a cluster with no audit "
                                                  "events for this long as a gap.")
    max_rows: PositiveInt = Field(50_000, description="Most documents read per query.")
    deliver_to: tuple[str, ...] = Field(
        (), description="Receivers under `notify.receivers` (email, slack or teams) that get each "
        "scheduled run once rendered: by email the HTML as the body and the files attached; "
        "to Slack or Teams a summary with a link. Through the notify outbox: retried until "
        "delivered.")
    link_url: str | None = Field(
        None, description="Where out_dir is published (e.g. https://reports.example.com/weekly): "
        "the link Slack, Teams and the mail give to the rendered HTML.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value)                  # raises ValueError, shown with the field
        return value

    def directory(self, data_dir: Path, name: str) -> Path:
        return self.out_dir or data_dir / "reports" / name


def cron_trigger(expression: str) -> "CronTrigger":
    """A cron expression with cron's weekday numbers (0 and 7 Sunday, 1 Monday), in UTC.

    APScheduler 3's from_crontab counts weekdays from Monday = 0, so "0 6 * * 1" would run on
    Tuesdays: numbers are turned into day names first."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields, not {len(fields)}: {expression!r}")
    if "/" in fields[4] and not fields[4].startswith("*"):
        raise ValueError("use day names for stepped weekday ranges, e.g. mon-fri/2")
    if "/" not in fields[4]:
        fields[4] = re.sub(r"\d+", lambda m: WEEKDAYS[int(m.group()) % 8], fields[4])
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday,
                       timezone="UTC")


__all__ = ["ReportConfig", "TEMPLATES", "cron_trigger"]
