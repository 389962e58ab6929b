"""Which receivers an alert goes to, and whether quiet hours hold it. Pure.

- An alert below `notify.min_severity` goes nowhere (counted by the stage, never silent).
- With no routes, every receiver gets every alert. With routes, the receivers of every route
  that matches (a union, each receiver once). A route matches when all its conditions hold;
  each condition is a list that matches when any entry does; rules, namespaces and clusters
  take shell-style wildcards (`prod-*`).
- Quiet hours hold non-critical alerts until the window ends; critical ones go out at once.
  With `digest: true` the held alerts then go out as one digest per receiver.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrail.event import Alert, Severity


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def severity_of(word: str) -> Severity:
    try:
        return Severity.from_word(word)
    except KeyError:
        raise ValueError(f"unknown severity {word!r}; one of "
                         f"{', '.join(s.word for s in Severity)}") from None


class Match(Strict):
    severity_min: str | None = None
    rules: tuple[str, ...] = ()           # rule ids or names, wildcards allowed
    tags: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()

    @field_validator("severity_min")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        return None if value is None else severity_of(value).word

    def matches(self, alert: Alert) -> bool:
        if self.severity_min and alert_severity(alert) < severity_of(self.severity_min):
            return False
        if self.rules and not _any_glob(self.rules, (alert.rule.id, alert.rule.name)):
            return False
        if self.tags and not set(self.tags) & set(alert.tags):
            return False
        if self.namespaces and not _any_glob(self.namespaces, (namespace_of(alert),)):
            return False
        return not self.clusters or _any_glob(self.clusters, (cluster_of(alert),))


class Route(Strict):
    match: Match = Match()
    receivers: tuple[str, ...] = Field(min_length=1)


class QuietHours(Strict):
    start: time                            # local wall-clock time, e.g. "22:00"
    end: time                              # e.g. "07:00" (the next morning when before start)
    timezone: str = "UTC"
    digest: bool = True

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def release_at(self, now: datetime) -> datetime | None:
        """When the quiet window holding `now` ends (UTC), or None outside quiet hours."""
        local = now.astimezone(ZoneInfo(self.timezone))
        start = datetime.combine(local.date(), self.start, local.tzinfo)
        end = datetime.combine(local.date(), self.end, local.tzinfo)
        if self.start <= self.end:
            quiet = start <= local < end
        elif local >= start:               # after start, before midnight: ends tomorrow
            quiet, end = True, end + timedelta(days=1)
        else:
            quiet = local < end
        return end.astimezone(timezone.utc) if quiet else None


def alert_severity(alert: Alert) -> Severity:
    try:
        return Severity.from_word(alert.alert.severity)
    except KeyError:                       # a word we do not know: the lowest, not an error
        return Severity.INFORMATIONAL


def namespace_of(alert: Alert) -> str:
    k8s = alert.kubernetes
    return (k8s.namespace if k8s is not None and k8s.namespace else
            (alert.orchestrator.namespace if alert.orchestrator and alert.orchestrator.namespace
             else ""))


def cluster_of(alert: Alert) -> str:
    orch = alert.orchestrator
    return orch.cluster.name if orch is not None and orch.cluster and orch.cluster.name else ""


def _any_glob(patterns: Sequence[str], values: Sequence[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns for value in values if value)


def route(alert: Alert, receivers: Sequence[str], routes: Sequence[Route],
          min_severity: Severity) -> list[str]:
    """The receivers for `alert`, in configuration order, each once."""
    if alert_severity(alert) < min_severity:
        return []
    if not routes:
        return list(receivers)
    chosen: dict[str, None] = {}
    for candidate in routes:
        if candidate.match.matches(alert):
            chosen.update(dict.fromkeys(candidate.receivers))
    return list(chosen)


def hold_until(alert: Alert, quiet: QuietHours | None, now: datetime) -> datetime | None:
    """When quiet hours release this alert, or None to send it now (critical never waits)."""
    if quiet is None or alert_severity(alert) >= Severity.CRITICAL:
        return None
    return quiet.release_at(now)
