"""Each SigmaHQ Kubernetes audit rule, unmodified, on one audit event it must match and one it
must not (events written from the audit.k8s.io Event format, through the real parser).

Five rules can never match a raw audit event (detectors.field_mapping and SOURCE.md say why):
they name top-level fields an audit Event does not have (`hostPath`, `capabilities`, `apiGroup`)
or compare `responseStatus.code` with the string `ALLOW`. They load, and match nothing, not even
the event written to look most like what they mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector_support import audit_event, exec_audit
from detectors.matcher import EventView
from detectors.sigma_rules import CompiledRule, load_rules


def event(verb: str, resource: str, namespace: str | None = "shop",
          **changes: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1", "name": "x"}
    if namespace:
        ref["namespace"] = namespace
    ref.update(changes.pop("ref", {}))
    fields = {"verb": verb, "objectRef": ref, "requestURI": f"/api/v1/{resource}/x",
              "responseStatus": {"code": 200}, **changes}
    return exec_audit(**fields)


ADMISSION = {"apiGroup": "admissionregistration.k8s.io"}
RBAC = {"apiGroup": "rbac.authorization.k8s.io"}
BATCH = {"apiGroup": "batch"}
# file stem -> (an event it matches, an event it does not match)
MATCHABLE: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "kubernetes_audit_change_admission_controller": (
        event("patch", "mutatingwebhookconfigurations", None, ref=ADMISSION),
        event("get", "mutatingwebhookconfigurations", None, ref=ADMISSION)),
    "kubernetes_audit_cronjob_modification": (
        event("create", "cronjobs", ref=BATCH), event("list", "cronjobs", ref=BATCH)),
    "kubernetes_audit_deployment_deleted": (
        event("delete", "deployments"), event("delete", "statefulsets")),
    "kubernetes_audit_events_deleted": (event("delete", "events"), event("create", "events")),
    "kubernetes_audit_exec_into_container": (
        exec_audit(), exec_audit(objectRef={"resource": "pods", "subresource": "log"})),
    "kubernetes_audit_pod_in_system_namespace": (
        event("create", "pods", "kube-system"), event("create", "pods", "shop")),
    "kubernetes_audit_rolebinding_modification": (
        event("create", "rolebindings", ref=RBAC), event("get", "rolebindings", ref=RBAC)),
    "kubernetes_audit_secrets_enumeration": (event("list", "secrets"), event("get", "secrets")),
    "kubernetes_audit_secrets_modified_or_deleted": (
        event("delete", "secrets"), event("list", "secrets")),
    "kubernetes_audit_serviceaccount_creation": (
        event("create", "serviceaccounts"), event("delete", "serviceaccounts")),
    "kubernetes_audit_unauthorized_unauthenticated_actions": (
        event("get", "secrets", responseStatus={"code": 403}),
        event("get", "secrets", responseStatus={"code": 200})),
}
# file stem -> the audit event that comes closest to what the rule means, which it still misses
NEVER_MATCH: dict[str, dict[str, Any]] = {
    "kubernetes_audit_hostpath_mount": event("create", "pods", requestObject={"spec": {
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}),
    "kubernetes_audit_privileged_pod_creation": event("create", "pods", requestObject={
        "spec": {"containers": [{"name": "c", "securityContext": {
            "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}]}}),
    "kubernetes_audit_rbac_permisions_listing": event(
        "create", "selfsubjectrulesreviews", None, ref={"apiGroup": "authorization.k8s.io"}),
    "kubernetes_audit_sidecar_injection": event("patch", "deployments", ref={"apiGroup": "apps"}),
    "kubernetes_audit_potential_enumeration_activity": exec_audit(
        requestURI="/api/v1/namespaces/shop/pods/web-0/exec?command=%2Fbin%2Fbash",
        userAgent="trufflehog/3.63"),
}


def the_rule(sigmahq_rules: Path, stem: str) -> CompiledRule:
    loaded = load_rules([sigmahq_rules / f"{stem}.yml"])
    assert loaded.errors == ()
    (rule,) = loaded.rules
    return rule


def test_every_sigmahq_rule_is_covered_here(sigmahq_rules: Path) -> None:
    assert {p.stem for p in sigmahq_rules.glob("*.yml")} == set(MATCHABLE) | set(NEVER_MATCH)


@pytest.mark.parametrize("stem", sorted(MATCHABLE))
def test_positive_and_negative(sigmahq_rules: Path, stem: str) -> None:
    rule = the_rule(sigmahq_rules, stem)
    positive, negative = MATCHABLE[stem]
    assert rule.matches(EventView(audit_event(positive)))
    assert not rule.matches(EventView(audit_event(negative)))


@pytest.mark.parametrize("stem", sorted(NEVER_MATCH))
def test_loads_but_never_matches_a_raw_audit_event(sigmahq_rules: Path, stem: str) -> None:
    rule = the_rule(sigmahq_rules, stem)
    assert not rule.matches(EventView(audit_event(NEVER_MATCH[stem])))
