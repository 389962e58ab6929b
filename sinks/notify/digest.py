"""A storm (or the end of quiet hours) in one message: how many alerts, which rules, where. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from ctrail.event import Alert, Severity
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


def digest_reason(any_held: bool) -> str:
    return "quiet hours" if any_held else "storm"
