"""A storm (or the end of quiet hours) in one message: how many alerts, which rules, where. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from ctrail.event import Alert, Severity
from sinks.notify.message import Pending
from sinks.notify.routing import alert_severity, namespace_of


@dataclass(frozen=True, slots=True)
class Digest:
    count: int                                    # alerts covered (not their repeat counts)
    repeats: int                                  # the sum of alert.count: raw occurrences
    top_rules: tuple[tuple[str, str, int], ...]   # (rule id, rule name, alerts), most first
    severities: tuple[tuple[str, int], ...]       # (word, alerts), most severe first
    namespaces: tuple[tuple[str, int], ...]
    first: datetime
    last: datetime
    critical: tuple[Alert, ...]                   # named one by one: never lost in a count
    reason: str                                   # "storm" | "quiet hours"


def summarise(alerts: Sequence[Alert], reason: str, top: int = 5) -> Digest:
    rules = Counter((a.rule.id, a.rule.name) for a in alerts)
    severities = Counter(alert_severity(a) for a in alerts)
    namespaces = Counter(namespace_of(a) or "-" for a in alerts)
    times = [a.timestamp for a in alerts]
    return Digest(
        count=len(alerts), repeats=sum(a.alert.count for a in alerts),
        top_rules=tuple((rid, name, n) for (rid, name), n in rules.most_common(top)),
        severities=tuple((s.word, severities[s]) for s in sorted(severities, reverse=True)),
        namespaces=tuple(namespaces.most_common(top)),
        first=min(times), last=max(times),
        critical=tuple(a for a in alerts if alert_severity(a) >= Severity.CRITICAL)[:top],
        reason=reason)


def digest_reason(batch: Sequence[Pending], budget: int, digest_min_alerts: int) -> str | None:
    """Why `batch` goes as one digest ("quiet hours" when it holds rows released after them,
    "storm" when it is longer than the budget and `digest_min_alerts`), or None: one message
    per alert."""
    if any(p.digest for p in batch):
        return "quiet hours"
    return "storm" if len(batch) > max(budget, digest_min_alerts - 1) else None


def digest_why(reason: str, pace_of: str = "this channel") -> str:
    """The reason in words, for a digest's first line."""
    return ("quiet hours ended" if reason == "quiet hours"
            else f"alerts arrived faster than {pace_of}'s pace")
