"""A day of ordinary cluster and registry activity raises no alert from the whole pack:
controllers reading secrets, a CI robot pushing an image, Argo CD deploying it pinned by digest
and non-root (with the ReplicaSet controller's follow-up requests), and anonymous health probes.
Every event goes through its real parser, with the catalog's example configuration."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from collector.parsers.distribution import DistributionParser
from collector.parsers.harbor import HarborParser
from ctrail.components import RawRecord
from ctrail.event import Event
from detector_support import NOW, audit_event, exec_audit
from detectors import SigmaDetectorConfig

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.corp.example/shop/web@{DIGEST}"
ARGO = "system:serviceaccount:argocd:argocd-application-controller"
RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
CONFIG = {"trusted_registries": ["registry.corp.example"], "ci_actors": ["ci-bot", "robot$ci"],
          "production_namespaces": ["payments"], "system_namespaces": ["kube-system"]}


def request(verb: str, resource: str, user: str, namespace: str | None = "shop",
            body: dict[str, Any] | None = None, uri: str | None = None,
            group: str = "", number: int = 0) -> dict[str, Any]:
    ref = {"resource": resource, "apiGroup": group, "apiVersion": "v1", "name": "web"}
    if namespace:
        ref["namespace"] = namespace
    changes: dict[str, Any] = {
        "auditID": f"5d1c0000-0000-4000-8000-{number:012d}", "stage": "ResponseComplete",
        "verb": verb, "objectRef": ref, "user": {"username": user, "groups": []},
        "requestURI": uri or f"/api/v1/{resource}", "responseStatus": {"code": 200},
        "userAgent": "argocd-application-controller/v2.12.3", "level": "Request"}
    if body is not None:
        changes["requestObject"] = body
    return exec_audit(**changes)


def pod_spec() -> dict[str, Any]:
    return {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [{"name": "web", "image": IMAGE, "securityContext": {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}}]}


def audit_events() -> list[Event]:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}
    deployment = {"kind": "Deployment", "spec": {"replicas": 2, "template": template}}
    replicaset = {"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment"}]},
                  "spec": {"template": template}}
    pod = {"kind": "Pod", "metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]},
           "spec": pod_spec()}
    audits = [
        request("get", "secrets", "system:serviceaccount:cert-manager:cert-manager",
                "cert-manager"),
        request("watch", "secrets", "system:kube-controller-manager", None,
                uri="/api/v1/secrets?watch=true"),
        request("list", "secrets", "system:serviceaccount:argocd:argocd-server", "argocd"),
        request("create", "deployments", ARGO, body=deployment, group="apps"),
        request("create", "replicasets", "system:serviceaccount:kube-system:deployment-controller",
                body=replicaset, group="apps"),
        request("create", "pods", RS_CONTROLLER, body=pod),
        request("patch", "pods", "system:node:node-1", body={"status": {"phase": "Running"}})
        | {"objectRef": {"resource": "pods", "namespace": "shop", "name": "web-1",
                         "subresource": "status"}},
        request("create", "serviceaccounts", "system:node:node-1")
        | {"objectRef": {"resource": "serviceaccounts", "namespace": "shop", "name": "web",
                         "subresource": "token"}},
    ]
    for uri in ("/healthz", "/livez", "/readyz?verbose", "/version", "/openid/v1/jwks"):
        probe = request("get", "healthz", "system:anonymous", None, uri=uri)
        probe.pop("objectRef")
        audits.append(probe)
    for number, audit in enumerate(audits):
        audit["auditID"] = f"5d1c0000-0000-4000-8000-{number:012d}"
    return [audit_event(audit) for audit in audits]


def registry_events(real_data: Path) -> list[Event]:
    envelope = orjson.loads((real_data / "distribution-notifications" /
                             "golden_push_envelope_event_test.json").read_bytes())
    for item in envelope["events"]:
        item["actor"] = {"name": "ci-bot"}
    harbor = orjson.loads((real_data / "harbor-webhooks" / "artifact_pushed.default.json")
                          .read_bytes())
    harbor["operator"] = "robot$ci"
    again = copy.deepcopy(envelope)           # a retried notification: same tag, same digest
    return [*DistributionParser().parse(RawRecord(orjson.dumps(envelope), "push", NOW)),
            *DistributionParser().parse(RawRecord(orjson.dumps(again), "retry", NOW)),
            *HarborParser().parse(RawRecord(orjson.dumps(harbor), "harbor", NOW))]


def test_an_ordinary_day_raises_no_alert(real_data: Path) -> None:
    detector = SigmaDetectorConfig(**CONFIG).build()
    events = [*audit_events(), *registry_events(real_data)]
    assert len(events) > 15
    assert {e.event.id: [a.rule.id for a in detector.observe(e)] for e in events} == \
        {e.event.id: [] for e in events}


def test_the_same_day_with_a_root_image_from_docker_hub_does_alert() -> None:
    """The scenario is not silent because the pack is: change the image and it speaks."""
    detector = SigmaDetectorConfig(**CONFIG).build()
    deployment = {"kind": "Deployment", "spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "nginx:latest"}]}}}}
    event = audit_event(request("create", "deployments", ARGO, body=deployment, group="apps"))
    assert sorted(a.rule.id for a in detector.observe(event)) == \
        ["CT-K8S-012", "CT-K8S-013", "CT-K8S-014"]
