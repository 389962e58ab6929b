"""User activity: what each human user and each service account did in the period."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

from ctrail.event import fixed_width
from sinks.reports.data import audit, get, identity_kind, unique_requests, user_of, when
from sinks.reports.model import Chart, Report, Section, Table, by_count, time_series
from sinks.reports.source import Source

COLUMNS = ["user", "requests", "changes", "denied", "top actions", "namespaces", "source IPs",
           "first seen", "last seen"]


def build(source: Source) -> Report:
    report = Report("user-activity", "User activity", source.time_from, source.time_to,
                    datetime.now(timezone.utc))
    docs = unique_requests(source.docs("event.dataset:kubernetes.audit"))
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        by_user[user_of(doc)].append(doc)
    humans = {u: d for u, d in by_user.items() if identity_kind(u) == "human"}
    accounts = {u: d for u, d in by_user.items() if identity_kind(u) == "service account"}
    report.summary = [("API requests", len(docs)), ("Human users", len(humans)),
                      ("Service accounts", len(accounts))]
    report.sections = [
        Section("Human users", charts=[
            Chart.top("Requests by human user", Counter({u: len(d) for u, d in humans.items()})),
            time_series("Human requests over time", (when(d) for ds in humans.values()
                                                     for d in ds),
                        source.time_from, source.time_to)],
            tables=[Table("Human users", COLUMNS, _rows(humans))]),
        Section("Service accounts", charts=[
            Chart.top("Requests by service account",
                      Counter({u: len(d) for u, d in accounts.items()}))],
            tables=[Table("Service accounts", COLUMNS, _rows(accounts))]),
    ]
    return report


def _rows(users: dict[str, list[dict[str, Any]]]) -> list[list[Any]]:
    rows = []
    for user, docs in sorted(users.items(), key=lambda item: (-len(item[1]), item[0])):
        verbs = Counter(f"{audit(d).get('verb')} {get(d, 'kubernetes.audit.objectRef.resource')}"
                        for d in docs)
        changes = sum(1 for d in docs if audit(d).get("verb") not in ("get", "list", "watch"))
        denied = sum(1 for d in docs if get(d, "event.outcome") == "failure")
        namespaces = sorted({get(d, "kubernetes.audit.objectRef.namespace") or "(cluster)"
                             for d in docs})
        ips = sorted({ip for d in docs for ip in (get(d, "related.ip") or [])})
        rows.append([user, len(docs), changes, denied,
                     ", ".join(f"{v} ({n})" for v, n in by_count(verbs, 5)),
                     ", ".join(namespaces[:10]), ", ".join(ips[:5]),
                     fixed_width(min(when(d) for d in docs)),
                     fixed_width(max(when(d) for d in docs))])
    return rows
