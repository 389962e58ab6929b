"""Helpers for the correlation tests: audit events at chosen times, through the real parser,
the rule pack's detector (detect -> candidates) and a CorrelationEngine, as the stages run them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ctrail.event import Alert, Event
from detector_support import audit_event, exec_audit
from detectors import SigmaDetector, SigmaDetectorConfig
from detectors.window_state import CorrelationEngine

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(minutes: float, user: str = "alice@example.com", **changes: Any) -> Event:
    """An audit event at T0 + minutes by `user`: an exec by default, `changes` replace keys."""
    body = exec_audit(auditID=str(uuid.uuid4()), requestReceivedTimestamp=at(minutes),
                      stageTimestamp=at(minutes), **changes)
    body["user"] = {"username": user, "groups": ["system:authenticated"]}
    return audit_event(body)


def exec_into(minutes: float, pod: str, user: str = "alice@example.com",
              namespace: str = "shop") -> Event:
    return audit(minutes, user, requestURI=f"/api/v1/namespaces/{namespace}/pods/{pod}/exec",
                 objectRef={"resource": "pods", "namespace": namespace, "name": pod,
                            "apiVersion": "v1", "subresource": "exec"})


def secret_read(minutes: float, user: str = "alice@example.com", namespace: str = "shop",
                name: str = "db-password") -> Event:
    return audit(minutes, user, verb="get", stage="ResponseComplete",
                 requestURI=f"/api/v1/namespaces/{namespace}/secrets/{name}",
                 objectRef={"resource": "secrets", "namespace": namespace, "name": name,
                            "apiVersion": "v1"}, responseStatus={"metadata": {}, "code": 200})


def forbidden(minutes: float, user: str = "system:serviceaccount:shop:web") -> Event:
    return audit(minutes, user, verb="list", stage="ResponseComplete",
                 requestURI="/api/v1/namespaces/kube-system/secrets",
                 objectRef={"resource": "secrets", "namespace": "kube-system",
                            "apiVersion": "v1"},
                 responseStatus={"metadata": {}, "status": "Failure", "reason": "Forbidden",
                                 "code": 403})


def binding(minutes: float, subjects: list[dict[str, str]], user: str = "mallory@example.com",
            namespace: str = "shop") -> Event:
    return audit(minutes, user, verb="create", stage="ResponseComplete", level="RequestResponse",
                 requestURI=f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
                 objectRef={"resource": "rolebindings", "namespace": namespace, "name": "grant",
                            "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"},
                 requestObject={"kind": "RoleBinding", "metadata": {"name": "grant"},
                                "roleRef": {"kind": "ClusterRole", "name": "edit"},
                                "subjects": subjects},
                 responseStatus={"metadata": {}, "code": 201})


class Pipeline:
    """detect (candidates) then correlate (windows), in one object."""

    def __init__(self, late_events_secs: float = 60, **config: Any) -> None:
        self.detector: SigmaDetector = SigmaDetectorConfig(**config).build()
        self.engine = CorrelationEngine(self.detector.correlations.rules, late_events_secs,
                                        clock=lambda: 0.0)

    def feed(self, events: Iterable[Event]) -> list[Alert]:
        fired = []
        for event in events:
            _alerts, candidates = self.detector.detect(event)
            for candidate in candidates:
                fired.extend(self.engine.observe(candidate))
        return fired


def fired(events: Iterable[Event], rule_id: str, **config: Any) -> list[Alert]:
    return [alert for alert in Pipeline(**config).feed(events) if alert.rule.id == rule_id]
