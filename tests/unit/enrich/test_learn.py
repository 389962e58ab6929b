"""Event -> facts, on the real samples where they exist and on the sources' real formats."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from collector.parsers.cri_log import ContainerLogParser
from collector.parsers.distribution import DistributionParser
from collector.parsers.docker_event import DockerEventParser
from collector.parsers.falco import FalcoParser
from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event
from enrich import EnrichConfig
from enrich.graph import Fact
from enrich.learn import learn

NOW = datetime.now(timezone.utc)
TRACES = "falco-k8saudit-traces/trace_files"
CID = "0" * 12 + "a1" * 26


def parse(parser, data: bytes, origin: str = "test:1") -> list[Event]:  # type: ignore[no-untyped-def]
    return parser.parse(RawRecord(data, origin, NOW))


def first_event(real_data: Path, name: str) -> Event:
    line = (real_data / TRACES / name).read_bytes().splitlines()[0]
    return parse(K8sAuditParser(), line, name)[0]


def test_a_pod_create_teaches_uid_owner_creator_and_images(real_data: Path) -> None:
    (fact,) = learn(first_event(real_data, "create_nginx_pod_privileged.json"))
    assert (fact.kind, fact.key) == ("pod", "default/nginx-deployment-5cdcc99dbf-rgw6z")
    assert fact.fields["uid"] == "8c845395-d85f-11e8-88b6-080027728ac4"
    assert fact.fields["owner"] == ("ReplicaSet", "nginx-deployment-5cdcc99dbf")
    assert fact.fields["creator"] == "system:serviceaccount:kube-system:replicaset-controller"
    assert fact.fields["images"] == [("nginx", "nginx")]


def test_a_deployment_create_records_who_changed_it(real_data: Path) -> None:
    (fact,) = learn(first_event(real_data, "create_deployment.json"))
    assert (fact.kind, fact.key) == ("workload", "Deployment/default/nginx-deployment")
    assert fact.fields["changes"] == [(fact.seen, "minikube-user")]


def audit_line(**fields: object) -> bytes:
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
             "verb": "create", "user": {"username": "system:kube-scheduler"},
             "responseStatus": {"code": 201}, "requestReceivedTimestamp": "2025-03-01T10:00:00Z"}
    return json.dumps({**event, **fields}).encode()


def test_a_binding_names_the_node_and_a_refused_one_teaches_nothing() -> None:
    ref = {"resource": "pods", "subresource": "binding", "namespace": "shop", "name": "p"}
    body = {"kind": "Binding", "target": {"kind": "Node", "name": "node-7"}}
    (event,) = parse(K8sAuditParser(), audit_line(objectRef=ref, requestObject=body))
    assert learn(event) == [Fact("pod", "shop/p", event_seconds(event), {"node": "node-7"})]
    (refused,) = parse(K8sAuditParser(), audit_line(objectRef=ref, requestObject=body,
                                                    responseStatus={"code": 403}))
    assert learn(refused) == []


def test_a_pod_status_update_maps_container_ids_to_the_pod_and_digest() -> None:
    ref = {"resource": "pods", "subresource": "status", "namespace": "shop", "name": "p"}
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "shop", "uid": "u"},
           "status": {"containerStatuses": [{
               "name": "api", "image": "reg.io/team/api:1.4", "containerID": f"containerd://{CID}",
               "imageID": "reg.io/team/api@sha256:" + "d1" * 32}]}}
    (event,) = parse(K8sAuditParser(), audit_line(objectRef=ref, verb="patch", responseObject=pod))
    container = learn(event)[1]
    assert (container.kind, container.key, container.fields["pod"]) == ("container", CID, "shop/p")
    assert container.fields["digest"] == "sha256:" + "d1" * 32


def event_seconds(event: Event) -> int:
    return int(event.timestamp.timestamp())


def test_docker_labels_link_the_container_to_its_pod_and_die_marks_it_gone() -> None:
    attributes = {"image": "reg.io/team/api:1.4", "io.kubernetes.pod.name": "p",
                  "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": "u",
                  "io.kubernetes.container.name": "api", "exitCode": "0"}
    line = json.dumps({"Type": "container", "Action": "die", "Actor": {
        "ID": CID, "Attributes": attributes}, "time": 1740823200}).encode()
    (event,) = parse(DockerEventParser(), line)
    pod, container = learn(event)
    assert (pod.key, pod.fields) == ("shop/p", {"uid": "u"})
    assert container.fields == {"id": CID, "pod": "shop/p", "uid": "u", "name": "api",
                                "image": "reg.io/team/api:1.4", "digest": None,
                                "gone": 1740823200}


def test_a_log_path_links_the_container_to_its_pod() -> None:
    origin = f"/var/log/containers/p_shop_api-{CID}.log:3"
    (event,) = parse(ContainerLogParser(), b"2025-03-01T10:00:00.000000000Z stdout F hello",
                     origin)
    facts = learn(event)
    assert [(f.kind, f.key) for f in facts] == [("pod", "shop/p"), ("container", CID)]


def test_falco_short_ids_become_containers_keyed_by_the_short_id(real_data: Path) -> None:
    line = next(l for l in (real_data / "falco-alerts-json/falco_website_alerts.jsonl")
                .read_bytes().splitlines() if b'"container.id": "' in l
                and b'"container.id": "host"' not in l)
    (event,) = parse(FalcoParser(), line)
    (fact,) = [f for f in learn(event) if f.kind == "container"]
    assert len(fact.key) == 12 and fact.fields["id"] == fact.key


def test_only_manifest_pushes_count_and_a_tagged_one_adds_history(real_data: Path) -> None:
    envelope = (real_data / "distribution-notifications/docs_push_envelope_3events.json")
    events = parse(DistributionParser(), envelope.read_bytes())
    facts = [f for e in events for f in learn(e)]
    assert [(f.kind, f.fields["user"]) for f in facts] == [("push", "test-actor")]
    tagged = json.loads(envelope.read_text())
    tagged["events"] = tagged["events"][:1]
    tagged["events"][0]["target"]["tag"] = "latest"
    (event,) = parse(DistributionParser(), json.dumps(tagged).encode())
    push, tag = learn(event)
    assert tag.key == "library/test:latest" and tag.fields["history"][0][1] == push.key


def test_the_enricher_still_does_what_audit_context_did(real_data: Path) -> None:
    enriched = EnrichConfig(cluster_name="prod").build().enrich(
        first_event(real_data, "create_nginx_pod_privileged.json"))
    assert enriched.orchestrator is not None and enriched.orchestrator.cluster is not None
    assert enriched.orchestrator.cluster.name == "prod"
    assert enriched.kubernetes is not None and enriched.kubernetes.pod is not None
    assert enriched.kubernetes.pod.uid == "8c845395-d85f-11e8-88b6-080027728ac4"
