"""GKE and AKS audit entries read as their producers mean them (issue 12), on real entries:
Panther's GKE-shaped rule-test logs and Elastic's pipeline-test inputs and expected documents."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from collector.parsers.common import parse_time
from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
parser = K8sAuditParser()


def parse(line: bytes) -> Event:
    (event,) = parser.parse(RawRecord(line, "test:1", NOW))
    assert isinstance(event, Event), event
    return event


def audit(event: Event) -> dict[str, Any]:
    assert event.kubernetes is not None and event.kubernetes.audit is not None
    return event.kubernetes.audit


def panther_gke(real_data: Path) -> list[dict[str, Any]]:
    """Panther's GKE Cloud Audit Log entries, with Panther's own `p_*` keys left out."""
    out = []
    for line in (real_data / "panther-k8s-rule-tests/rule_tests.jsonl").read_bytes().splitlines():
        log = orjson.loads(line)["log"]
        if "protoPayload" in log:
            out.append({k: v for k, v in log.items() if not k.startswith("p_")})
    return out


def elastic_lines(real_data: Path, marker: bytes) -> list[bytes]:
    return [line for path in sorted((real_data / "elastic-k8s-audit-pipeline-tests").glob("*.log"))
            for line in path.read_bytes().splitlines() if marker in line]


# google.rpc.Code -> HTTP, as google/rpc/code.proto documents each code.
GRPC_TO_HTTP = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
                10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}


def test_gke_status_codes_map_to_http_as_google_documents_them(real_data: Path) -> None:
    entries = panther_gke(real_data)
    failed = [e for e in entries if (e["protoPayload"].get("status") or {}).get("code")]
    # Panther's failed GKE cases: ABORTED (10, a create of an object that exists) and
    # PERMISSION_DENIED (7, a denial).
    assert sorted({e["protoPayload"]["status"]["code"] for e in failed}) == [7, 10]
    for entry in failed:
        grpc = entry["protoPayload"]["status"]["code"]
        event = parse(orjson.dumps(entry))
        assert audit(event)["responseStatus"]["code"] == GRPC_TO_HTTP[grpc]
        assert event.event.outcome == "failure"
    denied = [e for e in failed if e["protoPayload"]["status"]["code"] == 7]
    assert denied and all(audit(parse(orjson.dumps(e)))["responseStatus"]["code"] == 403
                          for e in denied)
    succeeded = [e for e in entries if not (e["protoPayload"].get("status") or {}).get("code")
                 and not refused(e)]
    assert all(audit(parse(orjson.dumps(e)))["responseStatus"]["code"] == 200 for e in succeeded)
    for grpc, http in GRPC_TO_HTTP.items():
        entry = {**entries[0], "protoPayload": {**entries[0]["protoPayload"],
                                                "status": {"code": grpc}}}
        assert audit(parse(orjson.dumps(entry)))["responseStatus"]["code"] == http, grpc


def refused(entry: dict[str, Any]) -> bool:
    """Refused without a status: a permission not granted, or a Status of Failure returned."""
    payload = entry["protoPayload"]
    return any(a.get("granted") is False for a in payload.get("authorizationInfo", [])) or \
        (payload.get("response") or {}).get("status") == "Failure"


def test_a_permission_not_granted_is_a_denial(real_data: Path) -> None:
    # Panther's "No Permission Granted" cases: authorizationInfo says granted false, and some
    # carry no status at all.
    entries = [e for e in panther_gke(real_data) if any(
        a.get("granted") is False for a in e["protoPayload"].get("authorizationInfo", []))]
    assert any(not (e["protoPayload"].get("status") or {}).get("code") for e in entries)
    for entry in entries:
        event = parse(orjson.dumps(entry))
        assert audit(event)["responseStatus"]["code"] == 403 and event.event.outcome == "failure"


def test_a_response_that_is_a_failure_status_is_a_failure(real_data: Path) -> None:
    # Panther's "Pod Not Created" and others: responses that are a Status of Failure.
    entries = [e for e in panther_gke(real_data)
               if (e["protoPayload"].get("response") or {}).get("status") == "Failure"]
    assert entries
    for entry in entries:
        event = parse(orjson.dumps(entry))
        assert audit(event)["responseStatus"]["code"] >= 400 and event.event.outcome == "failure"


def test_without_a_resource_name_the_method_names_the_resource() -> None:
    for method, ref in [
        ("io.k8s.core.v1.pods.create", {"resource": "pods", "apiVersion": "v1", "apiGroup": ""}),
        ("io.k8s.core.v1.pods.exec.create", {"resource": "pods", "apiVersion": "v1",
                                             "apiGroup": "", "subresource": "exec"}),
        ("io.k8s.authorization.rbac.v1.clusterroles.create", {
            "resource": "clusterroles", "apiVersion": "v1",
            "apiGroup": "rbac.authorization.k8s.io"}),
        ("io.k8s.apps.v1beta1.deployments.update", {"resource": "deployments",
                                                    "apiVersion": "v1beta1", "apiGroup": "apps"}),
    ]:
        entry = {"protoPayload": {"methodName": method, "request": {"spec": {"hostPID": True}}},
                 "timestamp": "2024-01-19T13:47:18.279921Z"}
        found = audit(parse(orjson.dumps(entry)))
        assert found["objectRef"] == ref and found["verb"] == method.rsplit(".", 1)[1]


def test_gke_keeps_the_audit_id_and_the_cluster_name(real_data: Path) -> None:
    (line,) = elastic_lines(real_data, b"protoPayload")
    event = parse(line)
    # Elastic's expected document: kubernetes.audit.auditID 1234abcd (operation.id, else
    # insertId), orchestrator.cluster.name test-cluster (resource.labels.cluster_name).
    assert audit(event)["auditID"] == "1234abcd"
    assert event.orchestrator is not None and event.orchestrator.cluster is not None
    assert event.orchestrator.cluster.name == "test-cluster"
    entries = panther_gke(real_data)
    with_operation = [e for e in entries if (e.get("operation") or {}).get("id")]
    assert with_operation
    for entry in with_operation:
        assert audit(parse(orjson.dumps(entry)))["auditID"] == entry["operation"]["id"]
    insert_only = {k: v for k, v in orjson.loads(line).items() if k != "operation"}
    assert audit(parse(orjson.dumps(insert_only)))["auditID"] == insert_only["insertId"]
    clustered = [e for e in entries if (e.get("resource") or {}).get("labels", {}).get("cluster_name")]
    assert clustered
    for entry in clustered:
        orchestrator = parse(orjson.dumps(entry)).orchestrator
        assert orchestrator is not None and orchestrator.cluster is not None
        assert orchestrator.cluster.name == entry["resource"]["labels"]["cluster_name"]


def test_gke_caller_ip_as_panther_spells_it(real_data: Path) -> None:
    spelled = [e for e in panther_gke(real_data)
               if "callerIP" in (e["protoPayload"].get("requestMetadata") or {})]
    assert spelled
    for entry in spelled:
        event = parse(orjson.dumps(entry))
        assert event.source is not None
        assert event.source.ip == entry["protoPayload"]["requestMetadata"]["callerIP"]


# Elastic's expected document for test-kube-audit.log (elastic/integrations,
# packages/kubernetes/data_stream/audit_logs/_dev/test/pipeline/test-kube-audit.log-expected.json):
# the envelope kept under kubernetes.audit.aks_metadata, and @timestamp 2025-10-07T16:19:19.647Z,
# the stage time (requestReceivedTimestamp is .643609).
ELASTIC_AKS_METADATA = {
    "category": "kube-audit",
    "container_id": "a64cba7fefbf5020788dc29d9247157585bbb64826bf7209623ca7bb49b15fe7",
    "operation_name": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
    "pod": "kube-apiserver-869d7bb754-kkg69",
    "resource_id": "/SUBSCRIPTIONS/ae2861b3-e901-49bd-99f3-660eb5747107/RESOURCEGROUPS/TEST/"
                   "PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/TEST-CLUSTER",
    "service_build": "na",
    "stream": "stdout",
    "time": "2025-10-07T16:19:19.647880072Z",
}
ELASTIC_AKS_TIMESTAMP = datetime(2025, 10, 7, 16, 19, 19, 647000, tzinfo=timezone.utc)


def test_aks_keeps_the_envelopes_metadata_as_elastic_does(real_data: Path) -> None:
    (line,) = (real_data / "elastic-k8s-audit-pipeline-tests/test-kube-audit.log").read_bytes(
    ).splitlines()[:1]
    event = parse(line)
    assert audit(event)["aks_metadata"] == ELASTIC_AKS_METADATA
    assert event.orchestrator is not None and event.orchestrator.cluster is not None
    assert event.orchestrator.cluster.name == "TEST-CLUSTER"      # Azure writes it upper-cased
    # Elastic's @timestamp has millisecond precision: ours is the stage time it rounds.
    assert event.timestamp.replace(microsecond=event.timestamp.microsecond // 1000 * 1000) \
        == ELASTIC_AKS_TIMESTAMP
    assert event.timestamp == datetime(2025, 10, 7, 16, 19, 19, 647762, tzinfo=timezone.utc)
    assert event.event.original == line.decode()


def test_every_aks_shape_is_stamped_with_its_stage_time(real_data: Path) -> None:
    lines = elastic_lines(real_data, b'"properties"')
    assert len(lines) == 2                          # properties.log as a string and an object
    for line in lines:
        event = parse(line)
        inner = audit(event)
        assert event.timestamp == datetime.fromisoformat(inner["stageTimestamp"])
        envelope = orjson.loads(line)
        assert inner["aks_metadata"]["category"] == envelope["category"]
        assert inner["aks_metadata"]["resource_id"] == envelope["resourceId"]
        assert inner["aks_metadata"]["container_id"] == envelope["properties"]["containerID"]
        assert event.orchestrator is not None and event.orchestrator.cluster is not None
    panther = [orjson.loads(line)["log"] for line in
               (real_data / "panther-k8s-rule-tests/rule_tests.jsonl").read_bytes().splitlines()]
    aks = [{k: v for k, v in log.items() if not k.startswith("p_")} for log in panther
           if isinstance(log.get("properties"), dict) and "log" in log["properties"]]
    assert aks
    for entry in aks:
        event = parse(orjson.dumps(entry))
        stage = audit(event).get("stageTimestamp")
        if stage:
            assert event.timestamp == parse_time(stage, "stageTimestamp")
        assert audit(event)["aks_metadata"].get("category") == entry.get("category")


def test_plain_audit_lines_keep_the_request_received_time(real_data: Path) -> None:
    # Elastic's expected documents for plain audit.k8s.io lines set no @timestamp of their own
    # (the agent's read time stands), so nothing there asks to change ours: the time the
    # request was received, as before.
    lines = [line for line in (real_data / "elastic-k8s-audit-pipeline-tests/test-audit.log"
                               ).read_bytes().splitlines() if line.startswith(b'{"kind"')]
    assert len(lines) == 3
    for line in lines:
        event = parse(line)
        assert event.timestamp == datetime.fromisoformat(audit(event)["requestReceivedTimestamp"])


def test_gke_request_and_response_bodies_are_the_events_bodies(real_data: Path) -> None:
    # Pod-spec, role and binding rules read requestObject: GKE's protoPayload.request.
    with_bodies = [e for e in panther_gke(real_data) if e["protoPayload"].get("request")]
    assert len(with_bodies) >= 10
    for entry in with_bodies:
        found = audit(parse(orjson.dumps(entry)))
        assert found["requestObject"] == entry["protoPayload"]["request"]
        if entry["protoPayload"].get("response") is not None:
            assert found["responseObject"] == entry["protoPayload"]["response"]
