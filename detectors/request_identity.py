"""Which request an audit event records, the same at every stage of that request.

An alert's id must tell two requests apart without splitting one. kube-apiserver logs one
request up to four times (RequestReceived, ResponseStarted for long-running requests,
ResponseComplete, Panic) under one auditID, so the stages must give one id. The auditID alone is
not enough: a client may set it (the `Audit-ID` header), and Falco's regression traces reuse
them, so different requests that share one would collapse into one alert (three privileged pods
would give two alerts).

The identity is the auditID with what kube-apiserver records when the request is received and
never changes afterwards: verb, requestURI, the user and the impersonated user, source
addresses, user agent and requestReceivedTimestamp. The stage fields (stage, stageTimestamp,
responseStatus, responseObject, annotations) are left out.

The request body is recorded from ResponseStarted on, never at RequestReceived, so it is part of
the identity only for a rule that reads it (such a rule never matches at RequestReceived): two
pod creates with one auditID and different specs are two requests to CT-K8S-001, while a rule
about who created a pod in kube-system keeps the RequestReceived and ResponseComplete stages of
one request as one alert.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, Iterable, Iterator

import orjson
from sigma.conditions import ConditionFieldEqualsValueExpression

# Fields recorded when the request is received; the same at every stage.
RECEIVED_FIELDS: Final = ("verb", "requestURI", "user", "impersonatedUser", "sourceIPs",
                          "userAgent", "requestReceivedTimestamp")
# Rule fields that read the request body: requestObject and the derived fields computed from it
# (detectors.derived; the same list detectors.policy_coverage uses for the Request level).
BODY_FIELDS: Final = ("kubernetes.audit.requestObject",
                      *(f"derived.k8s.{name}" for name in (
                          "pod_specs", "containers", "root_containers",
                          "untrusted_image_registries", "human_subjects", "configmap_entries")))


def reads_request_body(trees: Iterable[Any]) -> bool:
    """Whether a rule with these pySigma condition trees reads the request body."""
    return any(field.startswith(BODY_FIELDS) for tree in trees for field in _fields(tree))


def _fields(node: Any) -> Iterator[str]:
    if isinstance(node, ConditionFieldEqualsValueExpression):
        yield str(node.field)
    for arg in getattr(node, "args", ()) or ():
        yield from _fields(arg)


def request_key(audit: dict[str, Any], with_body: bool) -> str | None:
    """`audit:<auditID>:<digest of the received fields (and the body)>`, or None without an
    auditID."""
    audit_id = audit.get("auditID")
    if not isinstance(audit_id, str) or not audit_id:
        return None
    received = [audit.get(name) for name in RECEIVED_FIELDS]
    if with_body:
        received.append(audit.get("requestObject"))
    try:
        canonical = orjson.dumps(received, option=orjson.OPT_SORT_KEYS)
    except TypeError:               # an integer beyond 64 bits, which orjson refuses
        canonical = json.dumps(received, sort_keys=True, default=str).encode()
    digest = hashlib.blake2b(canonical, digest_size=8).hexdigest()
    return f"audit:{audit_id}:{digest}"
