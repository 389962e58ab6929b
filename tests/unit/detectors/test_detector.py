"""The Sigma detector on real audit events: which rules fire, and the alerts they raise."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from pydantic import ValidationError

from ctrail.errors import InvalidInput
from ctrail.event import Event, Severity
from detector_support import audit_event, exec_audit, parse_line
from detectors import PACKAGED_RULES, SigmaDetector, SigmaDetectorConfig, load_rules

SIGMAHQ_EXEC = "a1b0ca4e-7835-413e-8471-3ff2b8a66be6"       # Potential Remote Command Execution
SIGMAHQ_UNAUTHORIZED = "0d933542-1f1f-420d-97d4-21b2c3c492d9"


@pytest.fixture(scope="module")
def detector() -> SigmaDetector:
    return SigmaDetectorConfig().build()


def trace_events(path: Path) -> list[Event]:
    events: list[Event] = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            events.extend(parse_line(line, f"{path.name}:{number}"))
        except InvalidInput:                 # fal_01_003.json: {"kind": 0}
            continue
    return events


def fired(detector: SigmaDetector, events: list[Event]) -> list[str]:
    return [alert.rule.id for event in events for alert in detector.observe(event)]


@pytest.mark.parametrize("trace", ["exec_pod.json", "attach_pod.json"])
def test_exec_and_attach_traces_fire_ct_k8s_004(detector: SigmaDetector, falco_traces: Path,
                                                trace: str) -> None:
    assert fired(detector, trace_events(falco_traces / trace)) == ["CT-K8S-004"]


def test_no_other_falco_trace_fires_ct_k8s_004(detector: SigmaDetector,
                                               falco_traces: Path) -> None:
    others = [p for p in sorted(falco_traces.glob("*.json"))
              if p.name not in ("exec_pod.json", "attach_pod.json")]
    assert len(others) == 45 and "create_nginx_pod_privileged.json" in {p.name for p in others}
    assert {p.name: [r for r in fired(detector, trace_events(p)) if r == "CT-K8S-004"]
            for p in others} == {p.name: [] for p in others}


# What the whole pack raises on Falco's Kubernetes audit traces; every other trace raises nothing
# (pods the ReplicaSet controller creates from an examined template, reads, deletes, ...).
PACK_ON_FALCO_TRACES = {
    "anonymous_creates_namespace_foo.json": ["CT-K8S-009"],
    "attach_cluster_admin_role.json": ["CT-K8S-006"],
    "attach_pod.json": ["CT-K8S-004"],
    "create_cluster_role_pod_exec.json": ["CT-K8S-025"],
    "create_cluster_role_wildcard_resources.json": ["CT-K8S-007"],
    "create_cluster_role_wildcard_verbs.json": ["CT-K8S-007"],
    "create_cluster_role_write_privileges.json": ["CT-K8S-026"],
    "create_clusterrolebinding.json": ["CT-K8S-006"],
    "create_configmap_sensitive_values.json": ["CT-K8S-022"] * 6,     # six requests
    "create_deployment.json": ["CT-K8S-012", "CT-K8S-014"],
    "create_nginx_pod_hostnetwork.json": ["CT-K8S-003"],
    "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json": ["CT-K8S-001"],
    "create_nginx_pod_privileged.json": ["CT-K8S-001"],
    "create_nginx_pod_privileged_2nd_container.json": ["CT-K8S-001"],
    "create_nginx_pod_sensitive_mount.json": ["CT-K8S-002"],
    "create_nginx_pod_sensitive_mount_2nd_container.json": ["CT-K8S-002"],
    "create_nginx_service_nodeport.json": ["CT-K8S-023"],
    "create_serviceaccount_kube_public_namespace.json": ["CT-K8S-027"],
    "create_serviceaccount_kube_system_namespace.json": ["CT-K8S-027"],
    "delete_cluster_role_kube_aggregator.json": ["CT-K8S-024"],
    "exec_pod.json": ["CT-K8S-004"],
    "modify_cluster_role_node_problem_detector.json": ["CT-K8S-024"],
}


def test_the_pack_on_every_falco_trace(detector: SigmaDetector, falco_traces: Path) -> None:
    traces = sorted(falco_traces.glob("*.json"))
    assert {p.name: fired(detector, trace_events(p)) for p in traces} == \
        {p.name: PACK_ON_FALCO_TRACES.get(p.name, []) for p in traces}


def test_the_alert_is_ecs_shaped_and_names_rule_threat_and_entities(
        detector: SigmaDetector, falco_traces: Path) -> None:
    (event,) = trace_events(falco_traces / "exec_pod.json")
    (alert,) = detector.observe(event)
    assert alert.model_dump(by_alias=True, exclude_none=True, mode="json") == {
        "@timestamp": "2018-10-26T13:38:34.867116Z",
        "event": {"id": "17a34aa0b0edb3fa1f7c371c7a3aa075", "kind": "alert",
                  "category": ["configuration"], "type": ["change"], "action": "CT-K8S-004",
                  "outcome": "success", "dataset": "containertrail.alerts",
                  "module": "containertrail", "original": event.event.original,
                  "ingested": "2026-11-24T00:00:00.000000Z", "severity": 47},
        "rule": {"id": "CT-K8S-004", "name": "Exec or Attach Into a Pod",
                 "description": alert.rule.description, "ruleset": "containertrail",
                 "reference": "https://microsoft.github.io/Threat-Matrix-for-Kubernetes/"
                              "techniques/Exec%20into%20container/"},
        "threat": {"framework": "MITRE ATT&CK", "tactic": {"name": ["Execution"]},
                   "technique": {"id": ["T1609"],
                                 "reference": ["https://attack.mitre.org/techniques/T1609/"]}},
        "alert": {"severity": "medium", "count": 1, "event_ids": [event.event.id],
                  "group_key": "CT-K8S-004|minikube-user|"
                               "default/nginx-deployment-7998647bdf-phvq7"},
        "user": {"name": "minikube-user"},
        "source": {"ip": "192.168.99.1"},
        "orchestrator": {"type": "kubernetes", "namespace": "default",
                         "resource": {"type": "pods/exec",
                                      "name": "nginx-deployment-7998647bdf-phvq7"}},
        "kubernetes": {"namespace": "default",
                       "pod": {"name": "nginx-deployment-7998647bdf-phvq7"}},
        "tags": [],
    }
    assert alert.rule.description is not None and "kubectl exec" in alert.rule.description


def test_both_stages_of_one_request_give_the_same_alert_id(detector: SigmaDetector) -> None:
    started = audit_event(exec_audit(stage="ResponseStarted"))
    completed = audit_event(exec_audit(stage="ResponseComplete",
                                       stageTimestamp="2026-11-20T09:20:00.000000Z"))
    assert started.event.id != completed.event.id
    (first,), (second,) = detector.observe(started), detector.observe(completed)
    assert first.event.id == second.event.id
    assert first.alert.event_ids != second.alert.event_ids
    (other,) = detector.observe(audit_event(exec_audit(auditID="another-request")))
    assert other.event.id != first.event.id


def test_requests_that_share_an_audit_id_are_told_apart(detector: SigmaDetector,
                                                        falco_traces: Path) -> None:
    # Falco's traces reuse auditIDs: two of the three privileged pods share one (their specs
    # differ), and so do an anonymous and a named user's namespace creates.
    privileged = [alert for name in ("create_nginx_pod_privileged.json",
                                     "create_nginx_pod_privileged_2nd_container.json",
                                     "create_nginx_pod_no_secctx_1st_container_privileged_"
                                     "2nd_container.json")
                  for event in trace_events(falco_traces / name)
                  for alert in detector.observe(event) if alert.rule.id == "CT-K8S-001"]
    assert len({alert.event.id for alert in privileged}) == 3
    exec_by_other_user = audit_event(exec_audit(user={"username": "bob@example.com"}))
    (mine,), (other,) = detector.observe(audit_event(exec_audit())), \
        detector.observe(exec_by_other_user)
    assert mine.event.id != other.event.id


def test_every_stage_of_one_request_gives_one_alert_id(write_rule: Callable[..., Path]) -> None:
    # A rule that does not read the body fires at RequestReceived (no body recorded yet) and at
    # ResponseComplete (body recorded) of one request: one alert id.
    rule = write_rule("    selection:\n        objectRef.resource: pods\n        verb: create\n"
                      "    condition: selection")
    detector = SigmaDetectorConfig(rule_paths=(rule,)).build()
    pod_create = exec_audit(requestURI="/api/v1/namespaces/shop/pods", stage="RequestReceived",
                            objectRef={"resource": "pods", "namespace": "shop",
                                       "apiVersion": "v1"}, responseStatus=None)
    received = audit_event(pod_create)
    complete = audit_event({**pod_create, "stage": "ResponseComplete",
                            "stageTimestamp": "2026-11-20T09:14:03.300000Z",
                            "objectRef": {**pod_create["objectRef"], "name": "web-1"},
                            "responseStatus": {"metadata": {}, "code": 201},
                            "requestObject": {"kind": "Pod", "metadata": {"name": "web-1"}}})
    (first,), (second,) = detector.observe(received), detector.observe(complete)
    assert first.event.id == second.event.id


def test_without_an_audit_id_the_event_id_keys_the_alert(detector: SigmaDetector) -> None:
    audit = exec_audit()
    del audit["auditID"]
    event = audit_event(audit)
    (alert,) = detector.observe(event)
    assert alert.event.id == detector.observe(event)[0].event.id
    assert alert.event.id != detector.observe(audit_event(exec_audit()))[0].event.id


def test_a_production_namespace_raises_exec_to_high() -> None:
    detector = SigmaDetectorConfig(production_namespaces=("payments",)).build()
    production = audit_event(exec_audit(objectRef={
        "resource": "pods", "subresource": "exec", "namespace": "payments", "name": "ledger-0"}))
    ((high,), (medium,)) = detector.observe(production), detector.observe(audit_event(exec_audit()))
    assert (high.alert.severity, high.event.severity) == ("high", Severity.HIGH)
    assert (medium.alert.severity, medium.event.severity) == ("medium", Severity.MEDIUM)


def test_an_exception_suppresses_and_is_counted() -> None:
    detector = SigmaDetectorConfig(exceptions={"CT-K8S-004": [
        {"user.name": "system:serviceaccount:ops:*"},
        {"user.name": "alice@example.com", "kubernetes.namespace": "sandbox"}]}).build()
    ops = audit_event(exec_audit(user={"username": "system:serviceaccount:ops:backup"}))
    alice_in_shop = audit_event(exec_audit())
    assert detector.observe(ops) == []
    assert [a.rule.id for a in detector.observe(alice_in_shop)] == ["CT-K8S-004"]
    assert detector.suppressed == {"CT-K8S-004": 1}


def test_sigmahq_rules_match_real_events(sigmahq_rules: Path, falco_traces: Path,
                                         real_data: Path) -> None:
    detector = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES, sigmahq_rules)).build()
    assert len(detector.rules.rules) == len(load_rules([PACKAGED_RULES]).rules) + 16
    assert fired(detector, trace_events(falco_traces / "exec_pod.json")) == \
        ["CT-K8S-004", SIGMAHQ_EXEC]
    panther = real_data / "panther-k8s-rule-tests" / "raw_audit_events_from_tests.jsonl"
    forbidden = [e for e in trace_events(panther)
                 if (e.kubernetes and e.kubernetes.audit or {}).get("responseStatus", {})
                 .get("code") in (401, 403)]
    assert forbidden
    assert all(SIGMAHQ_UNAUTHORIZED in fired(detector, [event]) for event in forbidden)


def test_events_of_other_datasets_meet_no_audit_rule(detector: SigmaDetector) -> None:
    event = audit_event(exec_audit())
    docker = event.model_copy(update={"event": event.event.model_copy(
        update={"dataset": "docker.events"})})
    assert detector.observe(docker) == []


def test_advance_has_nothing_due(detector: SigmaDetector) -> None:
    assert detector.advance(datetime(2026, 11, 24, tzinfo=timezone.utc)) == []


def test_broken_rules_and_unknown_exception_ids_are_logged_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    config = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES, tmp_path),
                                 exceptions={"CT-K8S-999": [{"user.name": "x"}]})
    with caplog.at_level(logging.WARNING, logger="detectors.sigma_detector"):
        detector = config.build()
    assert [rule.id for rule in detector.rules.rules] == \
        [rule.id for rule in load_rules([PACKAGED_RULES]).rules]
    assert [error.path for error in detector.load_errors] == [tmp_path / "broken.yml"]
    assert [r.getMessage() for r in caplog.records] == [
        "Skipped a Sigma rule that does not load.", "Exceptions name a rule that is not loaded."]


def test_the_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SigmaDetectorConfig.model_validate({"rules": ["x"]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        SigmaDetectorConfig.model_validate({"exceptions": {"CT-K8S-004": [{}]}})
    with pytest.raises(ValidationError, match="frozen"):
        SigmaDetectorConfig().production_namespaces = ("x",)  # type: ignore[misc]


def test_the_five_sigmahq_rules_documented_as_unmatchable_never_fire_on_real_events(
        sigmahq_rules: Path, falco_traces: Path, real_data: Path) -> None:
    detector = SigmaDetectorConfig(rule_paths=(sigmahq_rules,)).build()
    samples = [*sorted(falco_traces.glob("*.json")),
               *sorted((real_data / "elastic-k8s-audit-pipeline-tests").glob("*.log")),
               real_data / "panther-k8s-rule-tests" / "raw_audit_events_from_tests.jsonl"]
    titles = {rule.id: rule.title for rule in detector.rules.rules}
    seen = {titles[rule_id] for path in samples for rule_id in fired(detector, trace_events(path))}
    never = set(titles.values()) - seen
    assert {"Container With A hostPath Mount Created", "Privileged Container Deployed",
            "RBAC Permission Enumeration Attempt", "Potential Sidecar Injection Into Running "
            "Deployment", "Kubernetes Potential Enumeration Activity"} <= never
