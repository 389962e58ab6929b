"""Helpers for the first-seen and spike tests: audit events at chosen event times through the
real parser, the rule pack's detector (detect -> candidates) and a HistoryEngine, as the detect
and correlate stages run them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from correlation_support import T0, at
from ctrail.event import Alert, Event
from detector_support import audit_event, exec_audit
from detectors import SigmaDetector, SigmaDetectorConfig
from detectors.history_engine import HistoryEngine, history_engine

DAY = 1440.0                            # minutes


class HistoryPipeline:
    """detect (candidates) then the history engine, in one object; the wall clock stands
    still unless `wall` is moved."""

    def __init__(self, **config: Any) -> None:
        settings = SigmaDetectorConfig(**config)
        self.detector: SigmaDetector = settings.build()
        self.wall = [0.0]
        self.engine: HistoryEngine = history_engine(self.detector, settings)
        self.engine.clock = lambda: self.wall[0]

    def candidates(self, events: Iterable[Event]) -> list[Alert]:
        return [c for event in events for c in self.detector.detect(event)[1]
                if self.engine.handles(c)]

    def feed(self, events: Iterable[Event], rule_id: str | None = None) -> list[Alert]:
        fired = [alert for c in self.candidates(events) for alert in self.engine.observe(c)]
        return [a for a in fired if rule_id is None or a.rule.id == rule_id]

    def advance(self) -> None:
        self.engine.advance(datetime.fromtimestamp(self.wall[0], timezone.utc))


def audit(minutes: float, user: str = "alice@example.com", **changes: Any) -> Event:
    """An audit event at T0 + minutes by `user`: an exec unless `changes` replace keys (a
    fresh auditID unless one is given)."""
    body = exec_audit(**{"auditID": str(uuid.uuid4()), "requestReceivedTimestamp": at(minutes),
                         "stageTimestamp": at(minutes), **changes})
    body["user"] = {"username": user, "groups": ["system:authenticated"]}
    return audit_event(body)


def exec_at(minutes: float, user: str = "alice@example.com", namespace: str = "shop",
            pod: str = "web-0", **changes: Any) -> Event:
    return audit(minutes, user, requestURI=f"/api/v1/namespaces/{namespace}/pods/{pod}/exec",
                 objectRef={"resource": "pods", "namespace": namespace, "name": pod,
                            "apiVersion": "v1", "subresource": "exec"}, **changes)


def request_at(minutes: float, user: str = "alice@example.com", ip: str = "203.0.113.7",
               code: int = 200) -> Event:
    """A human's `get pods` from `ip`."""
    return audit(minutes, user, verb="get", stage="ResponseComplete",
                 requestURI="/api/v1/namespaces/shop/pods",
                 objectRef={"resource": "pods", "namespace": "shop", "apiVersion": "v1"},
                 sourceIPs=[ip], responseStatus={"metadata": {}, "code": code})


def secret_get_at(minutes: float, user: str, namespace: str) -> Event:
    return audit(minutes, user, verb="get", stage="ResponseComplete",
                 requestURI=f"/api/v1/namespaces/{namespace}/secrets/token",
                 objectRef={"resource": "secrets", "namespace": namespace, "name": "token",
                            "apiVersion": "v1"}, responseStatus={"metadata": {}, "code": 200})


def denied_at(minutes: float, user: str = "system:serviceaccount:shop:web",
              code: int = 403) -> Event:
    return audit(minutes, user, verb="list", stage="ResponseComplete",
                 requestURI="/api/v1/namespaces/kube-system/secrets",
                 objectRef={"resource": "secrets", "namespace": "kube-system",
                            "apiVersion": "v1"},
                 responseStatus={"metadata": {}, "status": "Failure", "code": code})


def when(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
