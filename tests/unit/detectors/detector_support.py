"""Helpers for the detector tests: events through the real audit parser."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)
_parser = K8sAuditParser()


def parse_line(line: bytes, origin: str = "test:1") -> list[Event]:
    """Events from one raw audit line, through the real parser."""
    return _parser.parse(RawRecord(line, origin, NOW))


def audit_event(audit: dict[str, Any]) -> Event:
    """The Event the real parser makes from one audit.k8s.io Event dict."""
    (event,) = parse_line(orjson.dumps(audit))
    return event


def exec_audit(**changes: Any) -> dict[str, Any]:
    """A kubectl exec request as kube-apiserver logs it; `changes` replace top-level keys."""
    audit: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": "2b0c5f3e-61a4-4d3c-9f57-0d8e1e2a7c11", "stage": "ResponseStarted",
        "requestURI": "/api/v1/namespaces/shop/pods/web-0/exec?command=sh&stdin=true&tty=true",
        "verb": "create",
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7", "10.0.0.1"],
        "userAgent": "kubectl/v1.29.3 (linux/amd64) kubernetes/6813625",
        "objectRef": {"resource": "pods", "namespace": "shop", "name": "web-0",
                      "apiVersion": "v1", "subresource": "exec"},
        "responseStatus": {"metadata": {}, "code": 101},
        "annotations": {"authorization.k8s.io/decision": "allow",
                        "authorization.k8s.io/reason": "RBAC: allowed"},
        "requestReceivedTimestamp": "2026-11-20T09:14:03.120331Z",
        "stageTimestamp": "2026-11-20T09:14:03.161004Z",
    }
    audit.update(changes)
    return audit
