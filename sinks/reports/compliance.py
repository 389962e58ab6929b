"""Compliance evidence mapped to controls: PCI DSS v4.0 10.2.1.x (audit events), 10.3
(protection of logs), 10.5.1 (retention), SOC 2 CC7.2 (monitoring), CIS Kubernetes Benchmark
1.2.x (API server audit settings), with counts, and the gaps in the audit trail itself."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from ctrail.components import Store
from ctrail.settings import Settings
from sinks.reports.data import RBAC_RESOURCES, get, when
from sinks.reports.model import Chart, Report, Section, Table, time_series
from sinks.reports.source import Source

AUDIT = "event.dataset:kubernetes.audit"
PCI_MIN_DAYS = 365
# (control, requirement, what counts as evidence, query over events)
EVENT_CONTROLS = (
    ("PCI DSS 10.2.1.1", "Individual user access to cardholder data",
     "reads of Secrets and ConfigMaps",
     f"{AUDIT} AND kubernetes.audit.objectRef.resource:(secrets OR configmaps) AND "
     "kubernetes.audit.verb:(get OR list OR watch)"),
    ("PCI DSS 10.2.1.2", "All actions by administrative accounts",
     "requests by members of system:masters",
     f'{AUDIT} AND kubernetes.audit.user.groups:"system:masters"'),
    ("PCI DSS 10.2.1.3", "Access to audit logs", "ContainerTrail searches and evidence exports",
     "event.dataset:containertrail.audit"),
    ("PCI DSS 10.2.1.4", "Invalid logical access attempts", "requests answered 401 or 403",
     f"{AUDIT} AND kubernetes.audit.responseStatus.code:(401 OR 403)"),
    ("PCI DSS 10.2.1.5", "Changes to identification and authentication credentials",
     "RBAC, service account and token changes",
     f"{AUDIT} AND kubernetes.audit.objectRef.resource:({RBAC_RESOURCES[1:-1]} OR "
     "serviceaccounts OR certificatesigningrequests) AND NOT kubernetes.audit.verb:(get OR "
     "list OR watch)"),
    ("PCI DSS 10.2.1.7", "Creation and deletion of system-level objects",
     "cluster-scoped creates and deletes",
     f"{AUDIT} AND kubernetes.audit.verb:(create OR delete) AND NOT "
     "_exists_:kubernetes.audit.objectRef.namespace"),
)


def build(source: Source, settings: Settings, gap_hours: int) -> Report:
    report = Report("compliance", "Compliance evidence", source.time_from, source.time_to,
                    datetime.now(timezone.utc))
    audit_docs = source.docs(AUDIT)
    # Totals come from count(): exact even when the documents read stop at max_rows.
    audit_events, alerts = source.count(AUDIT), source.count("*", "alerts")
    gaps = audit_gaps(audit_docs, source.time_from, source.time_to, timedelta(hours=gap_hours))
    rows = [[c, req, what, n, "evidence" if n else "none seen"]
            for c, req, what, query in EVENT_CONTROLS for n in [source.count(query)]]
    rows.insert(5, ["PCI DSS 10.2.1.6", "Initialization, stopping or pausing of audit logs",
                    f"gaps of {gap_hours} h or more without audit events", len(gaps),
                    "gap" if gaps else "no gaps"])
    rows += [_protection(settings), _retention(settings, source.store),
             _monitoring(source, alerts), *_cis(audit_docs, audit_events)]
    report.summary = [("Audit events", audit_events), ("Alerts", alerts),
                      ("Trail gaps", len(gaps))]
    pci = [r for r in rows if str(r[0]).startswith("PCI DSS 10.2")]
    report.sections = [
        Section("Controls", "Evidence found in the period, per control.",
                charts=[Chart("Audit events per PCI DSS 10.2.1 control",
                              [str(r[0]) for r in pci], [int(r[3]) for r in pci])],
                tables=[Table("Controls", ["control", "requirement", "evidence", "count",
                                           "status"], rows)]),
        Section("Audit trail completeness", charts=[
            time_series("Audit events over time", (when(d) for d in audit_docs),
                        source.time_from, source.time_to)],
            tables=[Table("Gaps", ["cluster", "from", "to", "hours"], gaps,
                          f"No audit events from the cluster for {gap_hours} hours or more.")]),
    ]
    return report


def audit_gaps(docs: list[dict[str, Any]], start: datetime, end: datetime,
               longest: timedelta) -> list[list[Any]]:
    """Per cluster, every stretch of at least `longest` without an audit event, counting
    from the period's start and to its end."""
    times: dict[str, list[datetime]] = defaultdict(list)
    for doc in docs:
        times[get(doc, "orchestrator.cluster.name") or "(default)"].append(when(doc))
    gaps = []
    for cluster, stamps in sorted(times.items()):
        edges = [start, *sorted(stamps), min(end, datetime.now(timezone.utc))]
        for before, after in zip(edges, edges[1:]):
            if after - before >= longest:
                gaps.append([cluster, before.isoformat(), after.isoformat(),
                             round((after - before).total_seconds() / 3600, 1)])
    return gaps


def _protection(settings: Settings) -> list[Any]:
    if settings.evidence is None:
        return ["PCI DSS 10.3", "Audit logs protected from modification",
                "evidence archive not configured", "-", "gap"]
    from sinks.evidence.verify import load_public_key, verify

    root = settings.evidence.root(settings.data_dir)
    if not (root / "manifests").is_dir():
        return ["PCI DSS 10.3", "Audit logs protected from modification",
                "evidence archive configured, nothing sealed yet", 0, "pending"]
    key_file = root / "public_key.pem"
    key = load_public_key(key_file.read_bytes()) if key_file.exists() else None
    result = verify(root, key)
    what = (f"hash-chained archive, {result.segments} segments, {result.records} records, "
            f"{'signed' if key else 'unsigned'}; verification "
            f"{'passed' if result.ok else 'FAILED: ' + str(result.findings[0])}")
    return ["PCI DSS 10.3", "Audit logs protected from modification", what, result.records,
            "evidence" if result.ok and key else "gap"]


def _retention(settings: Settings, store: Store) -> list[Any]:
    days = settings.evidence.retention.audit_days if settings.evidence else None
    what = (f"evidence archive keeps audit events {days} days" if days else
            "no evidence archive") + "; " + store_retention(settings, store)
    ok = (days or 0) >= PCI_MIN_DAYS
    return ["PCI DSS 10.5.1", "Audit log history retained at least 12 months", what,
            days or 0, "evidence" if ok else "gap"]


def store_retention(settings: Settings, store: Store) -> str:
    """What the store does with old events. Elasticsearch deletes them only through ILM, which
    some clusters lack (the store's `ilm` says whether it could install its policies): a
    configured age is then not a retention, and saying so would mislead an auditor."""
    days = getattr(getattr(settings.store, "retention", None), "events_days", None)
    if days is None:
        return "store keeps events until deleted"
    if getattr(store, "ilm", True) is False:
        return (f"store set to keep events {days} days but keeps them until deleted "
                "(no index lifecycle management on the cluster)")
    return f"store keeps events {days} days"


def _monitoring(source: Source, alerts: int) -> list[Any]:
    rules = len({get(a, "rule.id") for a in source.docs("*", "alerts")})
    return ["SOC 2 CC7.2", "Monitoring of system components for anomalies",
            f"alerts raised by {rules} detection rules", alerts,
            "evidence" if alerts else "none seen"]


def _cis(audit_docs: list[dict[str, Any]], audit_events: int) -> list[list[Any]]:
    clusters = Counter(get(d, "orchestrator.cluster.name") or "(default)" for d in audit_docs)
    levels = Counter(get(d, "kubernetes.audit.level") or "?" for d in audit_docs)
    seen = ", ".join(f"{k}: {v}" for k, v in sorted(levels.items()))
    return [["CIS 1.2.16", "Ensure --audit-log-path is set (audit logging on)",
             f"audit events received from {len(clusters)} cluster(s); levels {seen}",
             audit_events, "evidence" if audit_events else "gap"],
            ["CIS 1.2.17-1.2.19", "Audit log maxage >= 30, maxbackup >= 10, maxsize >= 100",
             "API server flags are not visible in audit events: check kube-apiserver flags",
             "-", "manual"]]
