"""A request the API server refused did not happen (issue 12): the pack's rules about objects
created, changed or read fire only on success. The single-event rules have a 403 case each in
detectors/rules/tests/; this covers the correlation base rules, which raise no alert of their
own, and keeps the exceptions (rules that exist for refusals) named."""

from __future__ import annotations

from typing import Any

import yaml

from detector_support import audit_event, exec_audit
from detectors import PACKAGED_RULES, load_rules
from detectors.matcher import EventView

RULES = {rule.id: rule for rule in load_rules([PACKAGED_RULES]).rules}
# Audit rules that are not about an object created, changed or read: refusals are their
# evidence (CT-COR-003's base), or they already ask whether the request was allowed (CT-K8S-009:
# an anonymous request that was allowed, by the authorizer's decision or the status).
# About refusals (CT-SPK-001 counts them), or about any request at all: a human user's
# credential used from a new address shows even when the request is refused (CT-NEW-003), and
# so does a person outside the allowed users acting on the API (CT-K8S-028, as Falco's
# Disallowed K8s User).
NOT_ABOUT_SUCCESS = {"CT-COR-BASE-FORBIDDEN", "CT-K8S-009", "CT-SPK-BASE-DENIED",
                     "CT-NEW-BASE-HUMAN-REQUEST", "CT-K8S-028"}


def refused(audit: dict[str, Any]) -> dict[str, Any]:
    return {**audit, "stage": "ResponseComplete",
            "responseStatus": {"metadata": {}, "status": "Failure", "reason": "Forbidden",
                               "code": 403},
            "annotations": {"authorization.k8s.io/decision": "forbid"}}


def request(resource: str, verb: str, **extra: Any) -> dict[str, Any]:
    return exec_audit(verb=verb, stage="ResponseComplete",
                      requestURI=f"/apis/x/v1/namespaces/shop/{resource}",
                      objectRef={"resource": resource, "namespace": "shop", "name": "x",
                                 "apiVersion": "v1"},
                      responseStatus={"metadata": {}, "code": 201}, **extra)


BASE_CASES = {
    "CT-COR-BASE-POD-CREATE": request("pods", "create"),
    "CT-COR-BASE-BINDING": request("rolebindings", "create", requestObject={
        "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "bob@example.com"}]}),
    "CT-COR-BASE-SECRET-READ": request("secrets", "get"),
}


def matches(rule_id: str, audit: dict[str, Any]) -> bool:
    return RULES[rule_id].matches(EventView(audit_event(audit)))


def test_correlation_base_rules_do_not_count_a_refused_request() -> None:
    for rule_id, audit in BASE_CASES.items():
        assert matches(rule_id, audit), rule_id
        assert not matches(rule_id, refused(audit)), rule_id


def test_an_exec_logged_at_response_started_still_fires() -> None:
    assert matches("CT-K8S-004", exec_audit())        # 101 Switching Protocols
    started = exec_audit()
    del started["responseStatus"]
    assert matches("CT-K8S-004", started)
    assert not matches("CT-K8S-004", refused(exec_audit()))


def test_every_audit_rule_about_an_object_filters_refused_requests() -> None:
    documents = [doc for path in sorted(PACKAGED_RULES.glob("*.yml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    audit_rules = {doc["name"]: doc["detection"] for doc in documents
                   if doc.get("logsource", {}).get("service") == "audit" and "detection" in doc}
    assert len(audit_rules) >= 25
    unfiltered = {name for name, detection in audit_rules.items()
                  if detection.get("filter_failed") != {"responseStatus.code|gte": 400}}
    assert unfiltered == NOT_ABOUT_SUCCESS
