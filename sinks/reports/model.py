"""What a report is, independent of its format: sections of charts and tables. Builders
(weekly.py, activity.py, compliance.py) make one; render.py writes it as HTML, Markdown, CSV."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Iterable


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    @property
    def slug(self) -> str:
        return slug(self.title)


@dataclass
class Chart:
    """Bars: `labels[i]` has `values[i]`. kind "time" draws columns in time order, "bars" draws
    horizontal bars, largest first."""

    title: str
    labels: list[str]
    values: list[int]
    kind: str = "bars"

    @property
    def slug(self) -> str:
        return slug(self.title)

    @classmethod
    def top(cls, title: str, counts: Counter[str], limit: int = 12) -> "Chart":
        pairs = by_count(counts, limit)
        return cls(title, [k for k, _ in pairs], [v for _, v in pairs])


@dataclass
class Section:
    title: str
    text: str = ""
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Report:
    name: str
    title: str
    time_from: datetime
    time_to: datetime
    generated: datetime
    summary: list[tuple[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def by_count(counts: Counter[Any], limit: int | None = None) -> list[tuple[Any, int]]:
    """Largest count first, equal counts by label. (Counter.most_common keeps equal counts in
    the order they were first counted: the order a store returned documents in.)"""
    return sorted(counts.items(), key=lambda pair: (-pair[1], str(pair[0])))[:limit]


def count_table(title: str, header: str, counts: Counter[str], limit: int = 50) -> Table:
    return Table(title, [header, "count"], [[k, v] for k, v in by_count(counts, limit)])


# Column widths a time chart may use, shortest first: the report's span picks the shortest
# that gives at most MAX_COLUMNS (a 15-minute report in minutes, a quarter in weeks).
STEPS_SECS: Final = (60, 5 * 60, 15 * 60, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_COLUMNS: Final = 48


def time_series(title: str, stamps: Iterable[datetime], start: datetime, end: datetime) -> Chart:
    """Counts per minute, 5 or 15 minutes, hour, 6 hours, day or week: the shortest step that
    gives at most MAX_COLUMNS columns over the period (30 days beyond)."""
    span = (end - start).total_seconds()
    step = next((s for s in STEPS_SECS if span / s <= MAX_COLUMNS), 30 * 86400)
    width = timedelta(seconds=step)
    n = max(1, int(-(-span // step)))
    counts = [0] * n
    for stamp in stamps:
        i = int((stamp - start).total_seconds() // step)
        if 0 <= i < n:
            counts[i] += 1
    fmt = "%m-%d %H:%M" if step < 86400 else "%Y-%m-%d"
    return Chart(title, [(start + i * width).strftime(fmt) for i in range(n)], counts, "time")
