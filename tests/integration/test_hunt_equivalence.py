"""pySigma's Elasticsearch backend, run on the real Elasticsearch, against our own Sigma engine:
for every SigmaHQ Kubernetes audit rule, the events the backend's Lucene query finds in the
stored documents (no confirmation by our matcher) are exactly the events our compiled rule
matches (the predicate SigmaDetector uses).

The events: Falco's real audit traces (samples/k8s-audit and the copy in shared data; the same
events parse to the same ids), parsed by K8sAuditParser and enriched, plus crafted events:
positives for the rules the traces do not trigger, and near misses for the five rules that can
never match a raw audit event (detectors.field_mapping: top-level `hostPath`, `capabilities`,
`apiGroup`, and `responseStatus.code: ALLOW`), which both sides must leave unmatched.

Known difference in principle, not exercised by these rules: Elasticsearch compares keyword
fields case-sensitively while Sigma strings are case-insensitive, so an event whose value
differs from a rule's only in case (`userAgent: TruffleHog/3` against `*trufflehog*`) is matched
by our engine and missed by the backend's query. The SigmaHQ rules here name the API server's
canonical lower-case values (verbs, resources, API groups, namespaces), and the one rule with a
free-form value (userAgent, in "Kubernetes Potential Enumeration Activity") can never match at
all, so no rule is excepted below. `ctrail hunt` confirms every Elasticsearch hit with our
matcher (detectors.hunt) so its answers are ours.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from sigma.backends.elasticsearch import LuceneBackend
from sigma.collection import SigmaCollection

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event
from detectors.field_mapping import containertrail_pipeline
from detectors.hunt import hunt, load_hunt_rule
from detectors.matcher import EventView
from detectors.sigma_rules import load_rules
from enrich import EnrichConfig
from sinks.elasticsearch.store import ElasticsearchStore
from tests.contract.test_store import (
    elasticsearch_config,
    es_namespace,  # noqa: F401  (the session's namespace)
)
from tests.services import empty_elasticsearch_namespace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARED = Path("/work/shared/data/real")
SIGMAHQ = SHARED / "sigmahq-kubernetes-audit" / "rules"
TRACES = (REPO / "samples" / "k8s-audit", SHARED / "falco-k8saudit-traces" / "trace_files")
RULES = sorted(SIGMAHQ.glob("*.yml"))
RECEIVED = datetime(2026, 11, 25, tzinfo=timezone.utc)
# Rules whose backend query and our matcher may disagree, with the reason. Empty: see above.
DIFFERENT: dict[str, str] = {}
AT_LEAST_MATCHED = 11           # rules with a match: every rule that can match a real event


def _audit(n: int, verb: str, resource: str, *, group: str = "", namespace: str | None = "default",
           code: int = 200, subresource: str | None = None, uri: str | None = None,
           agent: str = "kubectl/v1.29.0 (linux/amd64) kubernetes/abc", user: str = "mallory",
           request: dict[str, Any] | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1", "name": f"obj-{n}"}
    if group:
        ref["apiGroup"] = group
    if namespace:
        ref["namespace"] = namespace
    if subresource:
        ref["subresource"] = subresource
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": f"00000000-0000-4000-8000-{n:012d}", "stage": "ResponseComplete",
        "requestURI": uri or f"/apis/{group or 'core'}/v1/{resource}/obj-{n}", "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.1.2.3"], "userAgent": agent, "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": f"2026-11-20T10:00:{n:02d}.000001Z",
        "stageTimestamp": f"2026-11-20T10:00:{n:02d}.000900Z",
        "annotations": {"authorization.k8s.io/decision": "allow" if code < 400 else "forbid",
                        "authorization.k8s.io/reason": ""}}
    if request is not None:
        event["requestObject"] = request
    return event


POD_WITH_HOSTPATH = {"kind": "Pod", "apiVersion": "v1", "spec": {
    "containers": [{"name": "c", "image": "alpine", "securityContext": {"privileged": True,
                                                                         "capabilities": {"add": ["SYS_ADMIN"]}}}],
    "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}

# Positives for the rules the traces do not trigger, and near misses for the rules that cannot
# match (they hold what those rules mean, but not the fields they name).
CRAFTED = [
    _audit(1, "create", "mutatingwebhookconfigurations", group="admissionregistration.k8s.io",
           namespace=None),
    _audit(2, "patch", "validatingwebhookconfigurations", group="admissionregistration.k8s.io",
           namespace=None),
    _audit(3, "create", "cronjobs", group="batch"),
    _audit(4, "delete", "jobs", group="batch"),
    _audit(5, "delete", "events"),
    _audit(6, "list", "secrets", namespace="kube-system"),
    _audit(7, "list", "secrets"),
    _audit(8, "get", "pods", code=403, user="system:anonymous"),
    _audit(9, "list", "nodes", code=401, user="system:anonymous", namespace=None),
    _audit(10, "create", "pods", request=POD_WITH_HOSTPATH),                    # hostPath, caps
    _audit(11, "create", "selfsubjectrulesreviews", group="authorization.k8s.io",
           namespace=None),                                                    # RBAC listing
    _audit(12, "patch", "deployments", group="apps"),                           # sidecar
    _audit(13, "create", "pods", subresource="exec", agent="trufflehog/3.63 (linux)",
           uri="/api/v1/namespaces/default/pods/p/exec?command=%2Fbin%2Fbash"),  # enumeration
    _audit(14, "get", "pods", code=200),                                        # matches nothing
    _audit(15, "list", "configmaps", code=403),
]


def parse(line: bytes, origin: str) -> list[Event]:
    return K8sAuditParser().parse(RawRecord(line, origin, RECEIVED))


def corpus() -> list[Event]:
    """Every trace event and crafted event, enriched, once per event id."""
    parsed: list[Event] = []
    for folder in TRACES:
        for path in sorted(folder.glob("*.json")):
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    parsed.extend(parse(line, f"{path.name}:{n}"))
                except InvalidInput:            # fal_01_003.json: malformed on purpose
                    continue
    for n, doc in enumerate(CRAFTED, 1):
        parsed.extend(parse(orjson.dumps(doc), f"crafted:{n}"))
    enricher = EnrichConfig().build()
    unique: dict[str, Event] = {}
    enricher.begin_batch()
    for event in parsed:
        unique.setdefault(event.event.id, enricher.enrich(event))
    enricher.end_batch()
    return list(unique.values())


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return corpus()


@pytest.fixture(scope="module")
def store(es_namespace: str, events: list[Event],  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticsearchStore]:
    built = elasticsearch_config(namespace=es_namespace).build(
        tmp_path_factory.mktemp("hunt-es"))
    assert built.write(events).delivered == len(events)
    yield built
    built.close()
    empty_elasticsearch_namespace(es_namespace)


def backend_query(path: Path) -> str:
    queries = LuceneBackend(processing_pipeline=containertrail_pipeline()).convert(
        SigmaCollection.from_yaml(path.read_text(encoding="utf-8")))
    assert len(queries) == 1 and isinstance(queries[0], str)
    return queries[0]


def engine_ids(path: Path, events: list[Event]) -> set[str]:
    rules = load_rules([path])
    assert not rules.errors and len(rules.rules) == 1
    rule = rules.rules[0]
    return {event.event.id for event in events if rule.matches(EventView(event))}


def ids(docs: list[dict[str, Any]]) -> set[str]:
    return {doc["event"]["id"] for doc in docs}


def test_there_are_sigmahq_rules_and_events() -> None:
    assert len(RULES) == 16
    assert len(corpus()) == 51 + len(CRAFTED)


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_the_backend_query_on_elasticsearch_finds_what_our_engine_matches(
        path: Path, store: ElasticsearchStore, events: list[Event]) -> None:
    found = ids(store.search_lucene(backend_query(path), limit=10_000))
    expected = engine_ids(path, events)
    if path.name in DIFFERENT:
        pytest.xfail(DIFFERENT[path.name])
    assert found == expected


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_hunt_on_elasticsearch_answers_as_our_engine(
        path: Path, store: ElasticsearchStore, events: list[Event]) -> None:
    rule = load_hunt_rule(path)
    assert ids(hunt(store, rule, path, limit=10_000)) == engine_ids(path, events)


def test_the_comparison_is_not_vacuous(events: list[Event]) -> None:
    matched = {path.name: len(engine_ids(path, events)) for path in RULES}
    assert sum(1 for n in matched.values() if n) >= AT_LEAST_MATCHED, matched
    never = {"kubernetes_audit_hostpath_mount.yml", "kubernetes_audit_privileged_pod_creation.yml",
             "kubernetes_audit_rbac_permisions_listing.yml",
             "kubernetes_audit_sidecar_injection.yml",
             "kubernetes_audit_potential_enumeration_activity.yml"}
    assert {name for name, n in matched.items() if not n} == never


def test_hunt_pages_and_limits_on_elasticsearch(store: ElasticsearchStore,
                                                events: list[Event]) -> None:
    path = SIGMAHQ / "kubernetes_audit_secrets_modified_or_deleted.yml"
    rule = load_hunt_rule(path)
    every = hunt(store, rule, path, limit=10_000)
    assert len(every) >= 4
    stamps = [doc["@timestamp"] for doc in every]
    assert stamps == sorted(stamps)                          # oldest first
    newest = hunt(store, rule, path, limit=2)
    assert [d["event"]["id"] for d in newest] == [d["event"]["id"] for d in every[-2:]]


def test_a_case_only_difference_is_settled_by_our_matcher(
        store: ElasticsearchStore, events: list[Event]) -> None:
    """Not a SigmaHQ rule: `userAgent|contains: trufflehog` against `trufflehog/3.63`, and the
    same rule with `TruffleHog` — ES keyword wildcards are case-sensitive, Sigma is not. The
    backend's query misses the event for the upper-case rule; our matcher matches both."""
    crafted = next(e for e in events if "trufflehog" in str((e.kubernetes.audit or {})
                                                               .get("userAgent", "")))
    for value in ("trufflehog", "TruffleHog"):
        text = (f"title: UA {value}\nid: 6f1c3a52-0000-4000-8000-00000000000{len(value) % 10}\n"
                "logsource: {product: kubernetes, service: audit}\n"
                f"detection:\n  sel:\n    userAgent|contains: '{value}'\n  condition: sel\n")
        backend = LuceneBackend(processing_pipeline=containertrail_pipeline())
        query = backend.convert(SigmaCollection.from_yaml(text))[0]
        hits = ids(store.search_lucene(query, limit=100))
        assert (crafted.event.id in hits) is (value == "trufflehog")
        rule = load_rules_from_text(text)
        assert rule.matches(EventView(crafted))


def load_rules_from_text(text: str) -> Any:
    from detectors.sigma_rules import compile_rule

    rule = SigmaCollection.from_yaml(text).rules[0]
    return compile_rule(copy.deepcopy(rule), containertrail_pipeline())
