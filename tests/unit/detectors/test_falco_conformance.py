"""Falco's k8saudit regression suite (../shared/data/real/falco-k8saudit-traces, the 66 cases of
Falco 0.34.1 with the rules it pinned) run through our pack: every case whose Falco rule has a
counterpart in our pack agrees with Falco, alert for alert, with the allow lists the case loads
expressed in our configuration (allowed users and namespaces, exceptions for trusted images).

Each Falco rule of the suite without a counterpart is listed below with the reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from detectors import SigmaDetectorConfig
from test_detector import trace_events
from tests.conftest import SHARED_DATA

# Falco rule -> ours.
COUNTERPARTS = {
    "Create Privileged Pod": "CT-K8S-001",
    "Create Sensitive Mount Pod": "CT-K8S-002",
    "Create HostNetwork Pod": "CT-K8S-003",
    "Attach/Exec Pod": "CT-K8S-004",
    "Attach to cluster-admin Role": "CT-K8S-006",
    "ClusterRole With Wildcard Created": "CT-K8S-007",
    "Anonymous Request Allowed": "CT-K8S-009",
    "Create/Modify Configmap With Private Credentials": "CT-K8S-022",
    "Create NodePort Service": "CT-K8S-023",
    "System ClusterRole Modified/Deleted": "CT-K8S-024",
    "ClusterRole With Pod Exec Created": "CT-K8S-025",
    "ClusterRole With Write Privileges Created": "CT-K8S-026",
    "Service Account Created in Kube Namespace": "CT-K8S-027",
    "Disallowed K8s User": "CT-K8S-028",
    "Create Disallowed Namespace": "CT-K8S-029",
}
# The suite's other rules, and why we have no counterpart.
NO_COUNTERPART = {
    "Pod Created in Kube Namespace": "CT-K8S-011 is about a person creating a pod there; "
    "Falco's traces are pods the replicaset-controller created, which we leave out",
    "Create Disallowed Pod": "an allow list of images per pod; ours is trusted registries "
    "(CT-K8S-013) and digests (CT-K8S-014, CT-COR-005)",
    "json_pointer_example": "a test of Falco's JSON-pointer syntax, not a detection",
    **{f"K8s {kind} {verb}": "Falco's activity rules (INFO): we store every event, an alert "
       "for each would be noise" for kind in ("Deployment", "Service", "ConfigMap", "Namespace",
                                             "Serviceaccount", "ClusterRole",
                                             "ClusterRoleBinding", "Secret")
       for verb in ("Created", "Deleted")},
}
# Falco's allow lists as the cases load them, in our configuration.
FALCO_ALLOWED_USERS = ["minikube", "minikube-user", "kubelet", "kops", "admin", "kube",
                       "kube-proxy", "kube-apiserver-healthcheck", "kubernetes-admin",
                       "vpa-recommender", "vpa-updater", "cluster-autoscaler"]
FALCO_ALLOWED_NAMESPACES = ["kube-system", "kube-public", "default"]
NGINX = [{"derived.k8s.containers.image": "nginx"}]


def config_of(case: dict[str, Any]) -> dict[str, Any]:
    files = {Path(f).name for f in case["rules_files"]}
    config: dict[str, Any] = {
        "allowed_users": FALCO_ALLOWED_USERS + (["some-user"] if "allow_user_some-user.yaml"
                                                in files else []),
        "allowed_namespaces": FALCO_ALLOWED_NAMESPACES + (["foo"] if "allow_namespace_foo.yaml"
                                                          in files else [])}
    if "trust_nginx_container.yaml" in files:      # falco_{privileged,sensitive_mount,
        config["exceptions"] = {rule: NGINX        # hostnetwork}_images += [nginx]
                                for rule in ("CT-K8S-001", "CT-K8S-002", "CT-K8S-003")}
    return config


def cases(falco_root: Path) -> list[Any]:
    spec = json.loads((falco_root / "expected_outcomes.json").read_text())
    return [pytest.param(case, id=case["name"]) for case in spec["cases"]]


FALCO = SHARED_DATA / "falco-k8saudit-traces"


@pytest.mark.parametrize("case", cases(FALCO) if FALCO.is_dir() else [])
def test_every_case_with_a_counterpart_agrees_with_falco(case: dict[str, Any],
                                                        falco_traces: Path) -> None:
    expected_rules = case["expected_counts_current_rule_names"]
    assert set(expected_rules) <= set(COUNTERPARTS) | set(NO_COUNTERPART)
    detector = SigmaDetectorConfig(**config_of(case)).build()
    alerts = {alert.event.id: alert.rule.id
              for event in trace_events(falco_traces / Path(case["trace_file"]).name)
              for alert in detector.observe(event)}
    ours = Counter(rule for rule in alerts.values() if rule in COUNTERPARTS.values())
    if case["detect"]:
        wanted = {COUNTERPARTS[r]: n for r, n in expected_rules.items() if r in COUNTERPARTS}
        assert {rule: ours[rule] for rule in wanted} == wanted
    else:
        assert ours == Counter()


def test_the_suite_covers_every_counterpart() -> None:
    spec = json.loads((FALCO / "expected_outcomes.json").read_text())
    named = {rule for case in spec["cases"] for rule in case["expected_counts_current_rule_names"]}
    assert set(COUNTERPARTS) <= named
