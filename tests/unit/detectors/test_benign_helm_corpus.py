"""The whole pack on a real cluster with no attack in it: the 16 563 complete audit records of
the PerfSPEC Helm dataset (../shared/data/real/k8s-audit-benign-helm-dataset: a kubeadm cluster
installing and uninstalling public Helm charts), each rebuilt by bench.corpus into the Event
kube-apiserver wrote at Metadata level, with its real auditID and time, through the real audit
parser, the Sigma detector and the correlation windows, as the stages run them.

The pack must be quiet on it without being blind: at most three medium or high alerts, each
named and justified below, and the attack cases next to them (same shapes, other actors) still
fire."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import corpus
from correlation_support import Pipeline, forbidden
from ctrail.cli.main import main
from ctrail.event import Alert, Event, Severity
from detector_support import audit_event, exec_audit

ADMIN = "kubernetes-admin"          # kubeadm's admin.conf (system:masters), which ran helm

# The medium and high alerts a benign Helm cluster still raises, by (rule, user, object), and the
# requests behind each. All three are CT-K8S-017: kubeadm's admin (system:masters) installing a
# chart's admission webhook with `helm install` (requestURI ?fieldManager=helm, 201). A new
# webhook receives every object it selects, which it may rewrite (mutating: inject a container
# into each new pod) or read (credentials) or refuse: a persistence path (ATT&CK T1546; Panther's
# Kubernetes.AdmissionController.Created and SigmaHQ's eed82177 fire on these creates too).
# Nothing in a Metadata-level record tells this install from the same request made with a
# stolen admin credential: the field manager is whatever the client sends, and an exception for
# the cluster-admin identity would hide the credential an attacker wants most. So each webhook
# installed stays one high alert. A webhook is a Mutating and a ValidatingWebhookConfiguration
# of one name, created by one install seconds apart: the rule's dedup (same user, verb and name
# within 5 minutes) makes them one alert, which the store keeps once.
JUSTIFIED = Counter({
    # kube-prometheus-stack's operator webhook (PrometheusRule objects): Mutating at
    # 18:29:08.27, Validating at 18:29:09.55.
    ("CT-K8S-017", ADMIN, "my-kube-prometheus-stack-admission"): 1,
    # ingress-nginx's webhook, which validates every Ingress: Validating only, 18:29:39.31.
    ("CT-K8S-017", ADMIN, "my-ingress-nginx-admission"): 1,
    # cert-manager's webhook (its certificates and issuers): Mutating and Validating 12 ms apart.
    ("CT-K8S-017", ADMIN, "my-cert-manager-webhook"): 1,
})
# The requests that raised each of them (each request still matches the rule; none is left out).
REQUESTS = {"my-kube-prometheus-stack-admission": {"mutatingwebhookconfigurations",
                                                   "validatingwebhookconfigurations"},
            "my-ingress-nginx-admission": {"validatingwebhookconfigurations"},
            "my-cert-manager-webhook": {"mutatingwebhookconfigurations",
                                        "validatingwebhookconfigurations"}}


def row_audit(row: list[str]) -> dict[str, Any]:
    doc = corpus.benign_template(row)
    doc["auditID"] = row[corpus.AUDIT_ID]
    doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = row[corpus.RECEIVED]
    return doc


def row_event(row: list[str]) -> Event:
    return audit_event(row_audit(row))


@pytest.fixture(scope="module")
def raised() -> list[Alert]:
    """Every alert the detector and the correlation windows raise, one per matching request."""
    pipeline = Pipeline()
    alerts: list[Alert] = []
    for row in corpus.helm_rows():
        single, candidates = pipeline.detector.detect(row_event(row))
        alerts.extend(single)
        for candidate in candidates:
            alerts.extend(pipeline.engine.observe(candidate))
    alerts.extend(pipeline.engine.advance(datetime(2030, 1, 1, tzinfo=timezone.utc)))
    return alerts


@pytest.fixture(scope="module")
def corpus_alerts(raised: list[Alert]) -> list[Alert]:
    """The alerts as stored: the first of each id (both stores keep the first write)."""
    first: dict[str, Alert] = {}
    for alert in raised:
        first.setdefault(alert.event.id, alert)
    return list(first.values())


def subject(alert: Alert) -> str | None:
    audit_ref = alert.orchestrator.resource if alert.orchestrator is not None else None
    return audit_ref.name if audit_ref is not None else None


def test_at_most_three_medium_or_high_alerts_each_justified(corpus_alerts: list[Alert],
                                                            raised: list[Alert]) -> None:
    loud = [a for a in corpus_alerts if a.event.severity >= Severity.MEDIUM]
    assert len(loud) <= 3
    assert Counter((a.rule.id, a.user.name if a.user else None, subject(a))
                   for a in loud) == JUSTIFIED
    assert len({a.alert.group_key for a in loud}) == 3
    for alert in loud:                  # the requests it stands for, as the rule matched them
        behind = [a for a in raised if a.event.id == alert.event.id]
        kinds = {a.orchestrator.resource.type for a in behind
                 if a.orchestrator is not None and a.orchestrator.resource is not None}
        assert kinds == REQUESTS[subject(alert) or ""]
        assert len(behind) == len(kinds)
    assert sum(a.event.severity >= Severity.MEDIUM for a in raised) == 5


def test_ctrail_ingest_of_the_corpus_stores_the_same_three(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole pipeline as a user runs it: the default configuration, `ctrail ingest` of the
    audit log, then `ctrail alerts`."""
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(orjson.dumps(row_audit(row)) + b"\n" for row in corpus.helm_rows()))
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["ingest", "--source", "k8s-audit", str(log), *data]) == 0
    assert "16563 accepted, 0 dead-lettered" in capsys.readouterr().out
    assert main(["alerts", "--format", "json", *data]) == 0
    stored = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    loud = [a for a in stored if a["event"]["severity"] >= Severity.MEDIUM]
    assert len(loud) <= 3
    assert Counter((a["rule"]["id"], a["user"]["name"], a["orchestrator"]["resource"]["name"])
                   for a in loud) == JUSTIFIED


def test_nothing_above_low_fires_on_the_controllers_noise(corpus_alerts: list[Alert]) -> None:
    # The noise the pack raised before: webhooks' own service accounts rotating their caBundle
    # (CT-K8S-017, 13), operators' cluster-wide secret informers and Helm's release-record reads
    # (CT-K8S-008, 26), control-plane 403 bursts (CT-COR-003: kube-scheduler, a node, the
    # replicaset-controller).
    rules = Counter(a.rule.id for a in corpus_alerts if a.event.severity >= Severity.MEDIUM)
    assert rules == Counter({"CT-K8S-017": 3})


def audit(user: str, verb: str, uri: str, resource: str, namespace: str | None = None,
          name: str | None = None, group: str = "", code: int = 200) -> Event:
    ref: dict[str, Any] = {"resource": resource, "apiGroup": group, "apiVersion": "v1"}
    ref |= {"namespace": namespace} if namespace else {}
    ref |= {"name": name} if name else {}
    return audit_event(exec_audit(
        user={"username": user, "groups": ["system:authenticated"]}, verb=verb,
        requestURI=uri, objectRef=ref, stage="ResponseComplete",
        responseStatus={"metadata": {}, "code": code}))


STOLEN_TOKEN = "system:serviceaccount:ingress-nginx:my-ingress-nginx"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@pytest.mark.parametrize(("event", "rule"), [
    # The operator's token used with kubectl: a plain list and a watch, not an informer's.
    (audit(STOLEN_TOKEN, "list", "/api/v1/secrets?limit=500", "secrets"), "CT-K8S-008"),
    (audit(STOLEN_TOKEN, "watch", "/api/v1/secrets?watch=true", "secrets"), "CT-K8S-008"),
    # The Helm admin reading one secret, or listing them without Helm's release selector.
    (audit(ADMIN, "get", "/api/v1/namespaces/redis/secrets/my-redis", "secrets", "redis",
           "my-redis"), "CT-K8S-008"),
    (audit(ADMIN, "list", "/api/v1/namespaces/redis/secrets", "secrets", "redis"), "CT-K8S-008"),
    # A service account creating or deleting a webhook; a person patching one.
    (audit(STOLEN_TOKEN, "create", WEBHOOKS, "mutatingwebhookconfigurations",
           group="admissionregistration.k8s.io", code=201), "CT-K8S-017"),
    (audit(STOLEN_TOKEN, "delete", f"{WEBHOOKS}/gatekeeper", "mutatingwebhookconfigurations",
           name="gatekeeper", group="admissionregistration.k8s.io"), "CT-K8S-017"),
    (audit(ADMIN, "patch", f"{WEBHOOKS}/gatekeeper", "mutatingwebhookconfigurations",
           name="gatekeeper", group="admissionregistration.k8s.io"), "CT-K8S-017"),
], ids=["sa-kubectl-list", "sa-kubectl-watch", "admin-get", "admin-list-all", "sa-create-webhook",
        "sa-delete-webhook", "admin-patch-webhook"])
def test_the_attack_next_to_the_noise_still_fires(event: Event, rule: str) -> None:
    assert rule in [alert.rule.id for alert in Pipeline().detector.observe(event)]


def webhook(user: str, verb: str, resource: str, name: str | None, seconds: float) -> Event:
    """A request on a webhook configuration at 10:00 UTC + `seconds`, its own auditID."""
    at = datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp() + seconds
    stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    uri = f"/apis/admissionregistration.k8s.io/v1/{resource}"
    event = audit(user, verb, uri if verb == "create" else f"{uri}/{name}", resource, name=name,
                  group="admissionregistration.k8s.io", code=201 if verb == "create" else 200)
    body = orjson.loads(event.event.original)
    body |= {"auditID": str(uuid.uuid4()), "requestReceivedTimestamp": stamp,
             "stageTimestamp": stamp}
    return audit_event(body)


MUTATING, VALIDATING = "mutatingwebhookconfigurations", "validatingwebhookconfigurations"


@pytest.mark.parametrize(("first", "second", "alerts"), [
    # One install: Helm's two configurations of one webhook, 1.3 s apart.
    ((ADMIN, "create", MUTATING, "inject", 1.0), (ADMIN, "create", VALIDATING, "inject", 2.3), 1),
    # Two webhooks installed together; the same webhook by two users.
    ((ADMIN, "create", MUTATING, "inject", 1.0), (ADMIN, "create", MUTATING, "evil", 2.0), 2),
    ((ADMIN, "create", MUTATING, "inject", 1.0),
     (STOLEN_TOKEN, "create", VALIDATING, "inject", 2.0), 2),
    # Created, then deleted; the second half of a pair in the next 5-minute window.
    ((ADMIN, "create", MUTATING, "inject", 1.0), (ADMIN, "delete", MUTATING, "inject", 3.0), 2),
    ((ADMIN, "create", MUTATING, "inject", 299.5), (ADMIN, "create", VALIDATING, "inject", 300.5),
     2),
    # Without a name to tell what was acted on, each request is its own alert.
    ((ADMIN, "create", MUTATING, None, 1.0), (ADMIN, "create", VALIDATING, None, 2.0), 2),
], ids=["one-install", "two-webhooks", "two-users", "create-then-delete", "next-window",
        "no-name"])
def test_a_webhooks_configurations_of_one_install_are_one_alert(
        first: tuple[str, str, str, str | None, float],
        second: tuple[str, str, str, str | None, float], alerts: int) -> None:
    detector = Pipeline().detector
    raised = [[a for a in detector.observe(webhook(*request)) if a.rule.id == "CT-K8S-017"]
              for request in (first, second)]
    assert [len(each) for each in raised] == [1, 1]        # each request still matches
    assert len({each[0].event.id for each in raised}) == alerts
    assert all(each[0].event.severity == Severity.HIGH for each in raised)


def test_a_forbidden_burst_by_a_workload_still_correlates_and_a_nodes_does_not() -> None:
    pipeline = Pipeline()
    workload = pipeline.feed(forbidden(i * 0.1) for i in range(10))
    assert [alert.rule.id for alert in workload] == ["CT-COR-003"]
    assert pipeline.feed(forbidden(i * 0.1, user="system:node:node-1") for i in range(12)) == []


@pytest.mark.parametrize(("rule", "audit_changes"), [
    ("CT-K8S-008", {"verb": "get", "requestURI": "/api/v1/namespaces/shop/secrets/db",
                    "objectRef": {"resource": "secrets", "namespace": "shop", "name": "db"}}),
    ("CT-K8S-010", {"requestURI": "/api/v1/namespaces/shop/serviceaccounts/web/token",
                    "objectRef": {"resource": "serviceaccounts", "namespace": "shop",
                                  "name": "web", "subresource": "token"}}),
    ("CT-K8S-018", {"requestURI": "/apis/batch/v1/namespaces/shop/cronjobs",
                    "objectRef": {"resource": "cronjobs", "namespace": "shop",
                                  "apiGroup": "batch"}}),
])
def test_an_event_with_no_user_is_not_a_human(rule: str, audit_changes: dict[str, Any]) -> None:
    detector = Pipeline().detector
    by_alice = exec_audit(stage="ResponseComplete", responseStatus={"metadata": {}, "code": 200},
                          **audit_changes)
    assert rule in [a.rule.id for a in detector.observe(audit_event(by_alice))]
    nobody = {key: value for key, value in by_alice.items() if key != "user"}
    assert rule not in [a.rule.id for a in detector.observe(audit_event(nobody))]
