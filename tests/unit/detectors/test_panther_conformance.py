"""Panther's Kubernetes rule tests (../shared/data/real/panther-k8s-rule-tests: 282 cases in
EKS, AKS and GKE shapes) through our parser and pack: on the Panther rules whose intent our pack
claims to cover, recall and precision are at least 0.9, and each case where we disagree is
listed below with the reason. The Panther rules we do not claim are listed with theirs."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson
import pytest

from detector_support import parse_line
from detectors import SigmaDetector, SigmaDetectorConfig
from tests.conftest import SHARED_DATA

CASES = SHARED_DATA / "panther-k8s-rule-tests" / "rule_tests.jsonl"
# Panther rule -> ours, where the intent is the same.
CLAIMED = {
    "Kubernetes.Pod.Exec": "CT-K8S-004", "GCP.K8s.ExecIntoPod": "CT-K8S-004",
    "Kubernetes.Pod.Host.Network": "CT-K8S-003",
    "GCP.K8s.Pod.Attached.To.Node.Host.Network": "CT-K8S-003",
    "Kubernetes.Pod.Host.PID": "CT-K8S-003", "GCP.K8s.Pod.Using.Host.PID.Namespace": "CT-K8S-003",
    "Kubernetes.Pod.Host.IPC": "CT-K8S-003",
    "Kubernetes.Service.NodePort.Deployed": "CT-K8S-023",
    "GCP.K8S.Service.Type.NodePort.Deployed": "CT-K8S-023",
    "Kubernetes.AdmissionController.Created": "CT-K8S-017",
    "Kubernetes.API.AnonymousAccess": "CT-K8S-009",
    "Kubernetes.Role.Wildcard": "CT-K8S-007",
    "Kubernetes.SystemRole.Modified": "CT-K8S-024",
    "Kubernetes.Role.PodExec": "CT-K8S-025",
    "Kubernetes.Role.WritePermissions": "CT-K8S-026",
}
# The cases of claimed rules where we disagree, and why.
DIFFERENCES = {
    ("Kubernetes.API.AnonymousAccess", "GCP GKE Anonymous API Access"):
        "the entry names system:anonymous only as authenticationInfo.authoritySelector, which "
        "Google documents as the authority the requester selected, not the principal",
    ("Kubernetes.AdmissionController.Created", "Webhook Update (Not Create)"):
        "CT-K8S-017 is about a webhook created, changed or deleted: a person changing one is "
        "as dangerous as creating it",
    ("Kubernetes.Pod.Host.IPC", "System Namespace with HostIPC (Excluded)"):
        "a pod in kube-system created by an account that is not a controller of ours "
        "(system:serviceaccount:kube-system:daemon): Panther leaves out every system namespace",
    ("Kubernetes.Role.PodExec", "Updating existing role (not creating)"):
        "a role changed to grant exec grants it as much as one created with it",
    ("Kubernetes.Role.Wildcard", "Updating existing role (not creating)"):
        "a role changed to a wildcard grants it as much as one created with it",
}
# Panther rules we do not claim, and why.
NOT_CLAIMED = {
    "Kubernetes.Pod.Privileged.Created": "Panther's includes pods running as root (ours: "
    "CT-K8S-012, low) and leaves out system namespaces",
    "GCP.K8S.Privileged.Pod.Created": "as Kubernetes.Pod.Privileged.Created",
    "Kubernetes.Pod.HostPath.Volume": "any hostPath; CT-K8S-002 is about sensitive host paths",
    "GCP.K8S.Pod.Create.Or.Modify.Host.Path.Volume.Mount": "as Kubernetes.Pod.HostPath.Volume",
    "Kubernetes.ClusterRoleBinding.Privileged": "a list of privileged roles; CT-K8S-006 is "
    "cluster-admin, or any binding to a person or to anonymous",
    "Kubernetes.CronJob.CreatedOrModified": "any CronJob change; CT-K8S-018 is a person's",
    "GCP.GKE.Kubernetes.Cron.Job.Created.Or.Modified": "a Deployment Manager entry, not a "
    "Kubernetes audit event",
    "Kubernetes.Pod.SystemNamespace": "CT-K8S-011 is a person's pod in kube-system or a "
    "namespace marked system",
    "Kubernetes.Secrets.DumpAllNamespaces": "CT-K8S-008 is also any person's secret read",
    "Kubernetes.ServiceAccount.TokenCreated": "long-lived token Secrets; CT-K8S-010 is a "
    "person requesting a token",
    "Amazon.EKS.AnonymousAPIAccess": "EKS-specific health-check and scanner heuristics",
}


def panther_cases() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CASES.read_text().splitlines()]


def fires(detector: SigmaDetector, case: dict[str, Any], rule: str) -> bool:
    log = {key: value for key, value in case["log"].items() if not key.startswith("p_")}
    return any(alert.rule.id == rule for event in parse_line(orjson.dumps(log))
               for alert in detector.observe(event))


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str], tuple[bool, bool]]:
    """(Panther rule, test name) -> (Panther expects an alert, ours fires) for claimed rules."""
    if not CASES.is_file():
        pytest.skip(f"Panther's rule tests are not at {CASES}")
    detector = SigmaDetectorConfig().build()
    return {(case["rule_id"], case["test_name"]):
            (case["expected_result"], fires(detector, case, CLAIMED[case["rule_id"]]))
            for case in panther_cases() if case["rule_id"] in CLAIMED}


def test_recall_and_precision_on_the_claimed_rules(
        outcomes: dict[tuple[str, str], tuple[bool, bool]]) -> None:
    counts = Counter(("T" if expected == ours else "F") + ("P" if ours else "N")
                     for expected, ours in outcomes.values())
    recall = counts["TP"] / (counts["TP"] + counts["FN"])
    precision = counts["TP"] / (counts["TP"] + counts["FP"])
    assert recall >= 0.9 and precision >= 0.9, counts
    assert counts["TP"] >= 40            # the claim covers real ground


def test_every_disagreement_is_listed(outcomes: dict[tuple[str, str], tuple[bool, bool]]
                                      ) -> None:
    assert {key for key, (expected, ours) in outcomes.items() if expected != ours} == \
        set(DIFFERENCES)


def test_every_panther_rule_with_an_audit_counterpart_is_claimed_or_explained() -> None:
    with_ours = {"Kubernetes.Pod.Exec", "Kubernetes.Pod.Privileged.Created",
                 "Kubernetes.Pod.HostPath.Volume", "Kubernetes.Role.Wildcard"}
    assert with_ours <= set(CLAIMED) | set(NOT_CLAIMED)
    assert not set(CLAIMED) & set(NOT_CLAIMED)
    assert set(CLAIMED) | set(NOT_CLAIMED) <= {case["rule_id"] for case in panther_cases()}
