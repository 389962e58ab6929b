"""What the console reads and changes: the store queries of `ctrail search`, `ctrail alerts`
and `ctrail timeline`, each within the asking user's scope (scopes.py), and alert triage.

Pages and the JSON API both call this module, so they give one answer; it is the CLI's answer
because the queries are the CLI's (the same store method, query tree and timeline plan).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from ctrail import query as q
from ctrail.audit.trail import period, record
from ctrail.cli.search import without_own_audit
from ctrail.cli.timeline import plan
from ctrail.components import Store
from ctrail.console.scopes import NAMESPACE, in_scope, scoped
from ctrail.console.users import ConsoleDb, User
from ctrail.errors import UsageError
from ctrail.event import fixed_width
from ctrail.query import parse_time
from ctrail.settings import Settings
from enrich.today import explain, load_graph
from sinks.notify.outbox import Outbox
from sinks.notify.report_notice import outbox_path
from sinks.reports.model import Chart

TRIAGE_ACTIONS: Final = ("acknowledge", "assign", "note", "close", "reopen")
CLOSE_REASONS: Final = ("true_positive", "benign", "duplicate")
SUBJECTS: Final = ("container", "pod", "image", "user")
LIVE_OVERLAP: Final = timedelta(seconds=10)     # an alert stored late is still seen live
HISTOGRAM_BUCKETS: Final = 24


@dataclass(frozen=True, slots=True)
class AlertFilter:
    query: str = "*"
    severity: str | None = None
    rule: str | None = None
    namespace: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    limit: int = 200

    def tree(self) -> q.Query:
        parts = [q.parse_query(self.query)]
        for path, value in (("alert.severity", self.severity), ("rule.id", self.rule),
                            (NAMESPACE, self.namespace)):
            if value:
                parts.append(q.Equals(path, value))
        return parts[0] if len(parts) == 1 else q.And(tuple(parts))


class ConsoleData:
    def __init__(self, settings: Settings, store: Store, db: ConsoleDb,
                 config_path: Path | None = None) -> None:
        self.settings, self.store, self.db = settings, store, db
        self.config_path = config_path      # for the CLI commands the console runs
        # A note is free text a person typed: a token pasted into it is hashed before it is
        # kept or audited, as the deployment hashes secrets everywhere else.
        self.redactor = settings.redaction.build(settings.data_dir)

    # ── events ────────────────────────────────────────────────────────────────────────────────

    @staticmethod
    def events_query(query: str | q.Query, user: User) -> q.Query:
        """A search of events as `ctrail search` makes it (our own audit records left out
        unless asked for), within the user's scope."""
        return scoped(without_own_audit(q.as_query(query)), user)

    def search(self, user: User, query: str, time_from: datetime | None,
               time_to: datetime | None, limit: int) -> list[dict[str, Any]]:
        docs = self.store.search(self.events_query(query, user), "events", time_from, time_to,
                                 limit)
        record(self.settings, "search", {"query": query, **period(time_from, time_to),
                                         "limit": limit, "results": len(docs), "console": True},
               user=user.name)
        return docs

    def histogram(self, user: User, query: str, time_from: datetime | None,
                  time_to: datetime | None, shown: list[dict[str, Any]],
                  buckets: int = HISTOGRAM_BUCKETS) -> Chart | None:
        """Hits over time, counted by the store in equal buckets of [time_from, time_to), or of
        the shown results' span when the search named no range; None without hits."""
        times = [parse_time(str(d["@timestamp"])) for d in shown if d.get("@timestamp")]
        start = time_from or (min(times) if times else None)
        end = time_to or (max(times) + timedelta(microseconds=1) if times else None)
        if start is None or end is None or end <= start:
            return None
        step = (end - start) / buckets
        edges = [start + step * i for i in range(buckets)] + [end]
        tree = self.events_query(query, user)
        values = [self.store.count(tree, "events", low, high)
                  for low, high in zip(edges, edges[1:])]
        labels = [edge.isoformat(timespec="seconds") for edge in edges[:-1]]
        return Chart(f"hits from {labels[0]} to {end.isoformat(timespec='seconds')}", labels,
                     values, kind="time")

    def event(self, user: User, event_id: str) -> dict[str, Any] | None:
        found = self.store.search(scoped(q.Equals("event.id", event_id), user), "events",
                                  None, None, 1)
        return found[0] if found else None

    def suggest(self, user: User, prefix: str, sample: int = 200) -> list[str]:
        """Field names that start with `prefix`, from the newest events in the user's scope
        (not the whole mapping: a field only another tenant's events have is not shown)."""
        names: set[str] = set()
        for doc in self.store.search(self.events_query("*", user), "events", None, None, sample):
            names.update(flatten(doc))
        return sorted(n for n in names if n.startswith(prefix))[:50]

    # ── alerts ────────────────────────────────────────────────────────────────────────────────

    def alerts(self, user: User, wanted: AlertFilter) -> list[dict[str, Any]]:
        docs = self.store.search(scoped(wanted.tree(), user), "alerts", wanted.time_from,
                                 wanted.time_to, wanted.limit)
        record(self.settings, "alerts-search", {
            "query": wanted.query, "severity": wanted.severity, "rule": wanted.rule,
            "namespace": wanted.namespace, **period(wanted.time_from, wanted.time_to),
            "limit": wanted.limit, "results": len(docs), "console": True}, user=user.name)
        return self.with_triage(docs)

    def alert(self, user: User, alert_id: str) -> dict[str, Any] | None:
        found = self.store.search(scoped(q.Equals("event.id", alert_id), user), "alerts",
                                  None, None, 1)
        return self.with_triage(found)[0] if found else None

    def new_alerts(self, user: User, since: datetime, seen: set[str]) -> list[dict[str, Any]]:
        """Alerts stored since `since` (by event.ingested, not @timestamp: an alert about an
        old event is new too) that are not in `seen`."""
        # Stored times have one fixed-width form: as text they order as the instants do.
        tree = q.Range("event.ingested", fixed_width(since - LIVE_OVERLAP), None)
        docs = self.store.search(scoped(tree, user), "alerts", None, None, 500)
        return self.with_triage([d for d in docs if alert_id(d) not in seen])

    def with_triage(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        history = self.db.triage_history([alert_id(d) for d in docs])
        return [{**doc, "triage": triage_state(history.get(alert_id(doc), []))} for doc in docs]

    def triage(self, user: User, alert_id_: str, action: str,
               detail: dict[str, Any]) -> dict[str, Any]:
        """Append one triage record to an alert the user can see; UsageError for an unknown
        action or close reason, LookupError for an alert outside the scope or unknown."""
        if action not in TRIAGE_ACTIONS:
            raise UsageError(f"unknown action {action!r} (one of {', '.join(TRIAGE_ACTIONS)})")
        if action == "close" and detail.get("reason") not in CLOSE_REASONS:
            raise UsageError(f"closing needs a reason: one of {', '.join(CLOSE_REASONS)}")
        if action == "assign" and self.db.user(str(detail.get("assignee") or "")) is None:
            raise UsageError("assign needs an assignee who is a console user")
        if action == "note" and not str(detail.get("note", "")).strip():
            raise UsageError("a note needs text")
        alert = self.alert(user, alert_id_)
        if alert is None:
            raise LookupError(alert_id_)
        if "note" in detail:
            detail = {**detail, "note": self.redactor.redact_text(str(detail["note"]))}
        entry = self.db.append_triage(alert_id_, action, user.name, detail)
        resolving = self._resolve_incidents(alert) if action == "close" else 0
        record(self.settings, "alert-triage", {"alert_id": alert_id_, "triage": action,
                                               **detail, "incidents_resolving": resolving},
               user=user.name)
        return {**entry, "incidents_resolving": resolving}

    def _resolve_incidents(self, alert: dict[str, Any]) -> int:
        """A closed alert's open incidents (PagerDuty, Opsgenie, Jira) are resolved by the
        notify stage's sender at its next pass: marked in its outbox in this data directory."""
        path = outbox_path(self.settings.data_dir)
        group_key = (alert.get("alert") or {}).get("group_key")
        if self.settings.notify is None or not group_key or not path.exists():
            return 0
        outbox = Outbox(path)
        try:
            return outbox.request_resolve(str(group_key))
        finally:
            outbox.close()

    # ── timelines ─────────────────────────────────────────────────────────────────────────────

    def timeline(self, user: User, kind: str, value: str,
                 limit: int = 10_000) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The subject card and its events, as `ctrail timeline --KIND VALUE` gives them, within
        the user's scope."""
        if kind not in SUBJECTS:
            raise UsageError(f"a timeline is of a {', '.join(SUBJECTS)}, not {kind!r}")
        graph = load_graph(self.settings)
        subject, query = plan(graph, argparse.Namespace(**{s: value if s == kind else None
                                                           for s in SUBJECTS}))
        docs: list[dict[str, Any]] = []
        if query:
            docs = self.store.search(scoped(query, user), "events", None, None, limit)
        docs = sorted((explain(graph, doc) for doc in docs),
                      key=lambda d: (str(d.get("@timestamp")), str((d.get("event") or {})
                                                                   .get("id"))))
        docs = [d for d in docs if in_scope(d, user)]
        record(self.settings, "timeline", {"subject": kind, "query": value, "limit": limit,
                                           "results": len(docs), "console": True},
               user=user.name)
        return scoped_subject(subject, user), docs


def group_alerts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A storm folded: one row per alert.group_key (its newest alert; docs are oldest first),
    with how many alerts of the group the list held and the events they counted."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        key = str((doc.get("alert") or {}).get("group_key") or alert_id(doc))
        groups.setdefault(key, []).append(doc)
    folded = [{**members[-1], "group": {
        "key": key, "alerts": len(members),
        "events": sum(int((m.get("alert") or {}).get("count") or 1) for m in members)}}
        for key, members in groups.items()]
    return sorted(folded, key=lambda d: (str(d.get("@timestamp")), alert_id(d)))


def alert_id(doc: dict[str, Any]) -> str:
    return str((doc.get("event") or {}).get("id", ""))


def triage_state(history: list[dict[str, Any]]) -> dict[str, Any]:
    """An alert's state folded from its append-only records."""
    state: dict[str, Any] = {"status": "open", "assignee": None, "reason": None, "notes": 0,
                             "history": history}
    for entry in history:
        match entry["action"]:
            case "acknowledge":
                state["status"] = "acknowledged"
            case "assign":
                state["assignee"] = entry.get("assignee")
            case "note":
                state["notes"] += 1
            case "close":
                state["status"], state["reason"] = "closed", entry.get("reason")
            case "reopen":
                state["status"], state["reason"] = "open", None
    return state


def scoped_subject(subject: dict[str, Any], user: User) -> dict[str, Any]:
    """The subject card a scoped user may see: whole for a container or pod of a namespace in
    the scope; otherwise what they asked for alone (an image's or a user's card spans
    namespaces, and the graph does not know a pod's cluster)."""
    if not user.scoped:
        return subject
    if subject["type"] in ("container", "pod") and not user.clusters \
            and subject.get("namespace") in user.namespaces:
        return subject
    return {"type": subject["type"], "query": subject["query"], "limited_to_scope": True}


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted ECS paths to leaf values (lists kept whole)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def now() -> datetime:
    return datetime.now(timezone.utc)
