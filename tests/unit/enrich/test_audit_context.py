"""What an audit event says about its own subject, as ECS fields (set by the parser), and the
cluster name the enricher adds."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event
from enrich import EnrichConfig


def event_of(real_data: Path, name: str) -> Event:
    line = (real_data / "falco-k8saudit-traces/trace_files" / name).read_bytes().splitlines()[0]
    return K8sAuditParser().parse(RawRecord(line, name, datetime.now(timezone.utc)))[0]


def test_a_pod_create_gets_pod_name_uid_labels_and_the_cluster(real_data: Path) -> None:
    enriched = EnrichConfig(cluster_name="prod-eu").build().enrich(
        event_of(real_data, "create_nginx_pod_privileged.json"))
    assert enriched.kubernetes is not None and enriched.kubernetes.pod is not None
    assert enriched.kubernetes.pod.name == "nginx-deployment-5cdcc99dbf-rgw6z"
    assert enriched.kubernetes.pod.uid == "8c845395-d85f-11e8-88b6-080027728ac4"
    assert enriched.kubernetes.labels == {"app": "nginx", "pod-template-hash": "1787755869"}
    assert enriched.orchestrator is not None
    assert enriched.orchestrator.cluster is not None
    assert enriched.orchestrator.cluster.name == "prod-eu"
    assert enriched.orchestrator.resource is not None
    assert (enriched.orchestrator.resource.type, enriched.orchestrator.resource.name) == (
        "pods", "nginx-deployment-5cdcc99dbf-rgw6z")


def test_an_exec_names_the_subresource_and_its_pod(real_data: Path) -> None:
    enriched = EnrichConfig().build().enrich(event_of(real_data, "exec_pod.json"))
    assert enriched.orchestrator is not None and enriched.orchestrator.resource is not None
    assert enriched.orchestrator.resource.type == "pods/exec"
    assert enriched.kubernetes is not None and enriched.kubernetes.pod is not None
    assert enriched.kubernetes.pod.name == "nginx-deployment-7998647bdf-phvq7"
    assert enriched.orchestrator.cluster is None


def test_a_non_pod_object_gets_no_pod_fields(real_data: Path) -> None:
    enriched = EnrichConfig().build().enrich(event_of(real_data, "create_secret.json"))
    assert enriched.kubernetes is not None and enriched.kubernetes.pod is None
    assert enriched.orchestrator is not None and enriched.orchestrator.resource is not None
    assert enriched.orchestrator.resource.type == "secrets"


def test_enrichment_keeps_the_event_itself_unchanged(real_data: Path) -> None:
    event = event_of(real_data, "create_nginx_pod_privileged.json")
    enriched = EnrichConfig().build().enrich(event)
    assert enriched.event == event.event
    assert enriched.kubernetes is not None and event.kubernetes is not None
    assert enriched.kubernetes.audit == event.kubernetes.audit
