"""The weekly security audit: alerts, privileged and host-access workloads, exec and attach
sessions, RBAC changes, secret reads by humans, and the images that ran."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sinks.reports.data import (
    RBAC_RESOURCES,
    READ_VERBS,
    WRITE_VERBS,
    audit,
    containers,
    get,
    host_access,
    identity_kind,
    parse_image,
    pod_spec,
    unique_requests,
    user_of,
    when,
)
from sinks.reports.model import Chart, Report, Section, Table, by_count, count_table, time_series
from sinks.reports.source import Source

AUDIT = "event.dataset:kubernetes.audit"


def build(source: Source) -> Report:
    report = Report("weekly", "Weekly security audit", source.time_from, source.time_to,
                    datetime.now(timezone.utc))
    alerts = source.docs("*", "alerts")
    workloads, images = _workloads(source)
    sessions = _sessions(source)
    rbac = _rbac(source)
    secrets = _secret_reads(source)
    # Totals from count(): exact even when the documents read stop at max_rows.
    report.summary = [("Audit events", source.count(AUDIT)),
                      ("Alerts", source.count("*", "alerts")),
                      ("Host-access workloads", len(workloads.rows)),
                      ("Exec/attach sessions", len(sessions.rows)),
                      ("RBAC changes", len(rbac.rows)), ("Human secret reads", len(secrets.rows))]
    report.sections = [
        _alerts(source, alerts),
        Section("Privileged and host-access workloads", "Pod specs created or changed with "
                "privileged containers, host namespaces or hostPath volumes.", tables=[workloads]),
        Section("Exec and attach sessions", "Interactive sessions opened inside containers "
                "(one row per API request).", tables=[sessions]),
        Section("RBAC changes", "Roles and bindings created, changed or deleted.", tables=[rbac]),
        Section("Secret reads by humans", "get, list and watch of Secrets by users that are "
                "neither service accounts nor system components.", tables=[secrets]),
        images,
    ]
    return report


def _alerts(source: Source, alerts: list[dict]) -> Section:
    by_rule = Counter(f"{get(a, 'rule.id')} {get(a, 'rule.name')}" for a in alerts)
    rows = [[rule, count] for rule, count in by_count(by_rule)]
    return Section("Alerts", charts=[
        time_series("Alerts over time", (when(a) for a in alerts), source.time_from,
                    source.time_to),
        Chart.top("Alerts by severity", Counter(get(a, "alert.severity") or "?" for a in alerts)),
        Chart.top("Alerts by rule", Counter(get(a, "rule.id") or "?" for a in alerts)),
        Chart.top("Alerts by namespace",
                  Counter(get(a, "kubernetes.namespace") or "(cluster)" for a in alerts)),
    ], tables=[Table("Alerts by rule", ["rule", "count"], rows),
               count_table("Alerts by namespace", "namespace", Counter(
                   get(a, "kubernetes.namespace") or "(cluster)" for a in alerts))])


def _workloads(source: Source) -> tuple[Table, Section]:
    docs = source.docs(f"{AUDIT} AND kubernetes.audit.verb:(create OR update OR patch)")
    rows: list[list[Any]] = []
    images: list[tuple[str, dict, str | None]] = []
    for doc in unique_requests(docs):
        spec = pod_spec(doc)
        if spec is None:
            continue
        ref = audit(doc).get("objectRef") or {}
        why = host_access(spec)
        if why:
            rows.append([doc["@timestamp"], user_of(doc), ref.get("namespace"),
                         f"{ref.get('resource')}/{ref.get('name') or get(doc, 'orchestrator.resource.name')}",
                         "; ".join(why)])
        pushed = get(doc, "containertrail.image_pushed_by.name")
        images += [(c["image"], doc, pushed) for c in containers(spec) if c.get("image")]
    for doc in source.docs("_exists_:container.image.name"):
        images.append((image_ref(doc), doc, get(doc, "containertrail.image_pushed_by.name")))
    table = Table("Host-access workloads", ["time", "user", "namespace", "object", "why"], rows)
    return table, _images(images)


def image_ref(doc: dict) -> str:
    """container.image.* as one reference: ECS keeps the tag and the digests beside the name,
    and a name alone would read as `:latest`."""
    name = get(doc, "container.image.name")
    tags = get(doc, "container.image.tag") or []
    digests = get(doc, "container.image.hash.all") or []
    if tags and ":" not in name.rpartition("/")[2] and "@" not in name:
        name = f"{name}:{tags[0]}"
    return f"{name}@{digests[0]}" if digests and "@" not in name else name


def _images(images: list[tuple[str, dict, str | None]]) -> Section:
    refs = {ref: parse_image(ref) for ref, _, _ in images}
    first: dict[str, tuple[dict, str | None]] = {}
    for ref, doc, pushed in images:
        first.setdefault(ref, (doc, pushed))
    unpinned = [[ref, refs[ref].registry, refs[ref].tag, first[ref][0]["@timestamp"],
                 get(first[ref][0], "kubernetes.namespace"), user_of(first[ref][0])]
                for ref in sorted(first) if not refs[ref].pinned]
    unknown = [[ref, refs[ref].registry, first[ref][0]["@timestamp"]]
               for ref in sorted(first) if first[ref][1] is None]
    by_registry = Counter(refs[ref].registry for ref in first)
    return Section("Images", "Images named by pod specs and run by container runtimes.",
                   charts=[Chart.top("Images by registry", by_registry)],
                   tables=[count_table("Images by registry", "registry", by_registry),
                           Table("Unpinned tags", ["image", "registry", "tag", "first seen",
                                                   "namespace", "by"], unpinned,
                                 "Referenced by tag, not by digest: the tag can be moved."),
                           Table("Unknown provenance", ["image", "registry", "first seen"],
                                 unknown, "No registry push of the image was seen "
                                          "(containertrail.image_pushed_by is unknown).")])


def _sessions(source: Source) -> Table:
    docs = source.docs(f"{AUDIT} AND kubernetes.audit.objectRef.subresource:(exec OR attach)")
    rows = []
    for doc in unique_requests(docs):
        record, ref = audit(doc), audit(doc).get("objectRef") or {}
        query = parse_qs(urlsplit(record.get("requestURI", "")).query)
        rows.append([doc["@timestamp"], user_of(doc), ref.get("subresource"),
                     ref.get("namespace"), ref.get("name"), " ".join(dict.fromkeys(query.get("container", []))),
                     " ".join(query.get("command", [])), get(doc, "event.outcome")])
    return Table("Sessions", ["time", "user", "type", "namespace", "pod", "container", "command",
                              "outcome"], rows)


def _rbac(source: Source) -> Table:
    docs = source.docs(f"{AUDIT} AND kubernetes.audit.objectRef.resource:{RBAC_RESOURCES}")
    rows = [[doc["@timestamp"], user_of(doc), audit(doc).get("verb"),
             get(doc, "kubernetes.audit.objectRef.resource"),
             get(doc, "kubernetes.audit.objectRef.namespace"),
             get(doc, "kubernetes.audit.objectRef.name"), get(doc, "event.outcome")]
            for doc in unique_requests(docs) if audit(doc).get("verb") in WRITE_VERBS]
    return Table("RBAC changes", ["time", "user", "verb", "resource", "namespace", "name",
                                  "outcome"], rows)


def _secret_reads(source: Source) -> Table:
    docs = source.docs(f"{AUDIT} AND kubernetes.audit.objectRef.resource:secrets")
    rows = [[doc["@timestamp"], user_of(doc), audit(doc).get("verb"),
             get(doc, "kubernetes.audit.objectRef.namespace"),
             get(doc, "kubernetes.audit.objectRef.name"), get(doc, "source.ip")]
            for doc in unique_requests(docs)
            if audit(doc).get("verb") in READ_VERBS and identity_kind(user_of(doc)) == "human"]
    return Table("Secret reads", ["time", "user", "verb", "namespace", "secret", "source.ip"], rows)
