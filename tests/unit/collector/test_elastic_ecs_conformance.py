"""Our ECS documents against the ones Elastic's Kubernetes integration writes for its own
pipeline-test inputs (../shared/data/real/elastic-k8s-audit-pipeline-tests; Elastic's expected
documents transcribed in tests/data/elastic-k8s-audit, see its SOURCE.md). Every field of every
expected document is compared; each accepted difference is listed in DIFFERENCES with its reason
and checked to be exactly that difference. Fields we add (event.id, event.dataset, ...) are ours
to add and not compared."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[3]
EXPECTED = REPO / "tests" / "data" / "elastic-k8s-audit"
INPUTS = SHARED_DATA / "elastic-k8s-audit-pipeline-tests"
RECEIVED = datetime.fromisoformat("2026-11-24T00:00:00+00:00")


def annotations_as_elastic_keys(ours: Any, theirs: Any) -> bool:
    """Elastic replaces the dots of annotation keys (its mapping would split the key into
    objects) and drops empty values. We keep the keys as Kubernetes writes them, because
    SigmaHQ's rules and ours name `annotations.authorization.k8s.io/decision`, and our index
    template maps annotations as `flattened`, which keeps a key whole."""
    return {k.replace(".", "_"): v for k, v in ours.items() if v != ""} == theirs


def first_address(ours: Any, theirs: Any) -> bool:
    """ECS source.ip is one address: the first of sourceIPs (the client's own). Elastic writes
    the list; client.ip and related.ip keep every address, as Elastic's do."""
    return [ours] == theirs[:1]


def same_members(ours: Any, theirs: Any) -> bool:
    """related.user: the same names and uids; the order of a related list carries nothing."""
    return sorted(ours) == sorted(theirs)


def same_millisecond(ours: Any, theirs: Any) -> bool:
    """@timestamp: Elastic's has millisecond precision; ours keeps the stage time's
    microseconds, in our one fixed-width form."""
    return ours[:23] == theirs[:23] and theirs.endswith("Z")


def gke_entry_kept_in_original(ours: Any, theirs: Any) -> bool:
    """GKE: Elastic keeps the Cloud Audit Log entry as it is under kubernetes.audit
    (protoPayload, operation, logName); we re-express it in audit Event fields (verb, user,
    objectRef, sourceIPs, responseStatus) so that one set of rules reads every source, and keep
    the entry byte for byte in event.original."""
    return ours is None


def gke_http_status(ours: Any, theirs: Any) -> bool:
    """GKE status.code is a google.rpc.Code: 0 (OK) is HTTP 200 as Google maps it; Elastic
    copies the gRPC code."""
    return (theirs, ours) == (0, 200)


def gke_received_time(ours: Any, theirs: Any) -> bool:
    """Elastic takes receiveTimestamp (when Cloud Logging received the entry) as
    requestReceivedTimestamp; we take the entry's timestamp, when the API server handled it."""
    return ours != theirs and ours.startswith(theirs[:16])


def non_resource_url(ours: Any, theirs: Any) -> bool:
    """orchestrator.resource.type: what the request acted on. For the non-resource URL /readyz
    we name the path; Elastic names the monitored resource's type (k8s_cluster)."""
    return (theirs, ours) == ("k8s_cluster", "readyz")


def no_name_for_a_path(ours: Any, theirs: Any) -> bool:
    """orchestrator.resource.name: a non-resource URL has no object name (ours: the path is the
    type, see non_resource_url); Elastic copies resourceName."""
    return ours is None and theirs == "readyz"


Accepted = Callable[[Any, Any], bool]
DIFFERENCES: dict[str, Accepted] = {
    "kubernetes.audit.annotations": annotations_as_elastic_keys,
    "source.ip": first_address,
    "related.user": same_members,
    "@timestamp": same_millisecond,
    "kubernetes.audit.protoPayload": gke_entry_kept_in_original,
    "kubernetes.audit.operation": gke_entry_kept_in_original,
    "kubernetes.audit.logName": gke_entry_kept_in_original,
    "kubernetes.audit.responseStatus.code": gke_http_status,
    "kubernetes.audit.requestReceivedTimestamp": gke_received_time,
    "orchestrator.resource.type": non_resource_url,
    "orchestrator.resource.name": no_name_for_a_path,
}
# Elastic's pipeline test adds this tag because its test config asks to preserve the original;
# event.original is always kept here.
NOT_OURS = {"tags"}


def leaves(doc: Any, path: str = "") -> dict[str, Any]:
    """Dotted path -> value, stopping at DIFFERENCES' paths (compared whole)."""
    if isinstance(doc, dict) and path not in DIFFERENCES:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(leaves(value, f"{path}.{key}" if path else key))
        return out
    return {path: doc}


def lookup(doc: Any, path: str) -> Any:
    for part in path_parts(doc, path):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def path_parts(doc: Any, path: str) -> list[str]:
    """Split a dotted path whose keys may themselves hold dots (annotation keys)."""
    parts, rest = [], path
    while rest:
        keys = doc.keys() if isinstance(doc, dict) else ()
        key = next((k for k in sorted(keys, key=len, reverse=True)
                    if rest == k or rest.startswith(k + ".")), rest.split(".", 1)[0])
        parts.append(key)
        doc = doc.get(key) if isinstance(doc, dict) else None
        rest = rest[len(key) + 1:]
    return parts


def pairs() -> list[Any]:
    found = []
    for name in ("test-audit.log", "test-kube-audit.log"):
        if not (INPUTS / name).is_file():
            continue
        lines = [line for line in (INPUTS / name).read_bytes().splitlines() if line.strip()]
        expected = json.loads((EXPECTED / f"{name}-expected.json").read_text())["expected"]
        found += [pytest.param(line, doc, id=f"{name}:{i}")
                  for i, (line, doc) in enumerate(zip(lines, expected), 1)]
    return found


@pytest.mark.parametrize(("line", "expected"), pairs())
def test_every_field_of_elastics_document(line: bytes, expected: dict[str, Any]) -> None:
    (event,) = K8sAuditParser().parse(RawRecord(line, "elastic", RECEIVED))
    ours = orjson.loads(event.model_dump_json(by_alias=True, exclude_none=True))
    assert ours["event"]["original"] == line.decode()
    unexplained = {}
    for path, theirs in leaves(expected).items():
        if path in NOT_OURS or path == "event.original":
            continue
        mine = lookup(ours, path)
        accepted = DIFFERENCES.get(path)
        if mine != theirs and not (accepted is not None and accepted(mine, theirs)):
            unexplained[path] = (theirs, mine)
    assert unexplained == {}


def test_every_listed_difference_occurs() -> None:
    seen = set()
    for param in pairs():
        line, expected = param.values
        (event,) = K8sAuditParser().parse(RawRecord(line, "elastic", RECEIVED))
        ours = orjson.loads(event.model_dump_json(by_alias=True, exclude_none=True))
        seen |= {path for path, theirs in leaves(expected).items()
                 if path in DIFFERENCES and lookup(ours, path) != theirs}
    assert seen == set(DIFFERENCES)
