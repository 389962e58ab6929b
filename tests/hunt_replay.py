"""One data set replayed both ways, for `ctrail hunt` of correlation rules: streamed through the
real pipeline (ctrail.raw -> process -> correlate -> store, as `ctrail ingest` runs it) and then
hunted over the stored copy (detectors.hunt_correlation). Used on the embedded store
(tests/unit/detectors/test_hunt_correlation.py) and on the real Elasticsearch
(tests/integration/test_hunt_correlation_elasticsearch.py).

The records, raw audit lines and Harbor webhooks, arrive in the order a collector would take
them in, not sorted: a few arrive out of order (within the late allowance), so the stream's
windows see them late and the hunt, which reads in event-time order, does not. Every pack
correlation fires at least once and misses once: CT-COR-002 (exec then a secret read), 003 (a
burst of 403s), 004 (exec into five pods), 006 (a binding then a secret read by its subject),
009 (a production pod with no scan of its digest; a scanned one stays quiet). The last record,
an hour later, moves event time past every window, so the stream decides the absence windows
as the hunt does when it reaches the end of history.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from ctrail.bus import RAW
from ctrail.bus.codec import RawEntry
from ctrail.event import Alert
from ctrail.runtime.pipeline import Pipeline
from ctrail.settings import Settings
from detectors.hunt_correlation import hunt_correlations, hunt_detector
from detectors.sigma_rules import PACKAGED_RULES

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
SCANNED = "sha256:" + "5c" * 32
UNSCANNED = "sha256:" + "0d" * 32
IMAGE = "registry.corp.example/team/api"
CORRELATIONS = ("ct-cor-002-exec-then-secret-read.yml", "ct-cor-003-forbidden-burst.yml",
                "ct-cor-004-exec-into-many-pods.yml", "ct-cor-006-binding-then-secret-read.yml",
                "ct-cor-009-deployed-without-scan.yml")


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(minutes: float, user: str, verb: str, uri: str, ref: dict[str, Any], code: int,
          **more: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": str(uuid.UUID(int=uuid.uuid5(uuid.NAMESPACE_URL, f"{minutes}{user}{uri}"
                                                     ).int)),
            "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
            "user": {"username": user, "groups": ["system:authenticated"]},
            "sourceIPs": ["203.0.113.7"], "objectRef": {"apiVersion": "v1", **ref},
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": at(minutes), "stageTimestamp": at(minutes), **more}


def exec_into(minutes: float, user: str, pod: str, namespace: str = "shop") -> dict[str, Any]:
    return audit(minutes, user, "create", f"/api/v1/namespaces/{namespace}/pods/{pod}/exec",
                 {"resource": "pods", "namespace": namespace, "name": pod,
                  "subresource": "exec"}, 101)


def secret_read(minutes: float, user: str, namespace: str = "shop") -> dict[str, Any]:
    return audit(minutes, user, "get", f"/api/v1/namespaces/{namespace}/secrets/db",
                 {"resource": "secrets", "namespace": namespace, "name": "db"}, 200)


def forbidden(minutes: float, user: str) -> dict[str, Any]:
    return audit(minutes, user, "list", "/api/v1/namespaces/kube-system/secrets",
                 {"resource": "secrets", "namespace": "kube-system"}, 403)


def binding(minutes: float, subject: str) -> dict[str, Any]:
    body = {"kind": "RoleBinding", "metadata": {"name": "grant"},
            "roleRef": {"kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": subject}]}
    return audit(minutes, "mallory@example.com", "create",
                 "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
                 {"resource": "rolebindings", "namespace": "shop", "name": "grant",
                  "apiGroup": "rbac.authorization.k8s.io"}, 201, level="RequestResponse",
                 requestObject=body)


def deploy(minutes: float, digest: str, name: str) -> dict[str, Any]:
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": name, "namespace": "payments",
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name))},
           "spec": {"containers": [{"name": "api", "image": f"{IMAGE}@{digest}"}]}}
    return audit(minutes, "deployer@example.com", "create", "/api/v1/namespaces/payments/pods",
                 {"resource": "pods", "namespace": "payments", "name": name}, 201,
                 level="RequestResponse", requestObject=pod, responseObject=pod)


def scan(minutes: float, digest: str) -> dict[str, Any]:
    return {"type": "SCANNING_COMPLETED",
            "occur_at": int((T0 + timedelta(minutes=minutes)).timestamp()), "operator": "auto",
            "event_data": {"resources": [{"digest": digest,
                                          "resource_url": f"{IMAGE}@{digest}"}],
                           "repository": {"name": "api", "namespace": "team",
                                          "repo_full_name": "team/api", "repo_type": "private"}}}


def records() -> list[tuple[str, dict[str, Any]]]:
    """(format, record) in arrival order."""
    out: list[tuple[str, dict[str, Any]]] = []
    audit_ = lambda *docs: out.extend(("k8s-audit", d) for d in docs)    # noqa: E731
    audit_(*(forbidden(i * 0.2, "system:serviceaccount:shop:prober") for i in range(11)))
    audit_(*(forbidden(i * 0.2, "system:serviceaccount:shop:quiet") for i in range(6)))
    audit_(exec_into(3, "carol@example.com", "web-0"), exec_into(2, "dave@example.com", "web-0"))
    audit_(secret_read(6, "carol@example.com"))
    audit_(*(exec_into(10 + i, "bob@example.com", f"pod-{i}") for i in (0, 1, 3, 2, 4)))
    audit_(secret_read(25, "dave@example.com"))
    audit_(binding(12, "erin@example.com"), secret_read(20, "erin@example.com"))
    audit_(deploy(30, UNSCANNED, "pay-1"), deploy(30.1, UNSCANNED, "pay-2"),
           deploy(31, SCANNED, "pay-3"))
    out.append(("harbor", scan(36, SCANNED)))
    audit_(exec_into(34.5, "frank@example.com", "web-1"))           # arrives after 36
    audit_(exec_into(95, "closer@example.com", "web-9"))             # event time moves on
    return out


def settings(data_dir: Path, **store: Any) -> Settings:
    return Settings(data_dir=data_dir, **store,   # type: ignore[arg-type]
                    detection={"production_namespaces": ["payments"], "late_events_secs": 120})


def stream(config: Settings,
           data: Iterable[tuple[str, dict[str, Any]]] | None = None) -> None:
    """Every record (format, record; this data set by default) through the pipeline's process,
    correlate and store stages."""
    pipeline = Pipeline(config, ("process", "correlate", "store"))
    try:
        producer = pipeline.bus.producer()
        for i, (fmt, record) in enumerate(records() if data is None else data):
            entry = RawEntry(fmt, "replay-test", f"data set:{i + 1}", T0, orjson.dumps(record))
            producer.send(RAW, key=entry.key, value=entry.encode())
        producer.flush()
        pipeline.drain()
    finally:
        pipeline.close()


def streamed_alerts(config: Settings, query: str = "rule.id:CT-COR-*") -> list[dict[str, Any]]:
    store = config.store.build(config.data_dir)
    try:
        return store.search(query, "alerts", None, None, 1000)
    finally:
        store.close()


def hunted_alerts(config: Settings) -> list[Alert]:
    store = config.store.build(config.data_dir)
    found: list[Alert] = []
    try:
        for name in CORRELATIONS:
            detector = hunt_detector(PACKAGED_RULES / name, config.detection)
            found += hunt_correlations(store, detector, config.detection.late_events_secs)
    finally:
        store.close()
    return found


def summary(alert: dict[str, Any]) -> tuple[str, str, str, str, tuple[str, ...], int]:
    """What must be the same both ways: id, rule, group, time, events, count."""
    return (alert["event"]["id"], alert["rule"]["id"], alert["alert"]["group_key"],
            datetime.fromisoformat(alert["@timestamp"]).isoformat(),
            tuple(sorted(alert["alert"]["event_ids"])), alert["alert"]["count"])


EXPECTED = {("CT-COR-002", "CT-COR-002|carol@example.com|shop"),
            ("CT-COR-003", "CT-COR-003|system:serviceaccount:shop:prober"),
            ("CT-COR-004", "CT-COR-004|bob@example.com"),
            ("CT-COR-006", "CT-COR-006|erin@example.com"),
            ("CT-COR-009", f"CT-COR-009|{UNSCANNED}")}
