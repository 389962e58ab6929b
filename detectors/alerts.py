"""The Alert a matched rule raises: a pure function of the rule, the event and the severity.

Being pure, it is idempotent by construction: a replay of the same event rebuilds the same alert,
with the same id, so the store keeps one.

- `event.id` hashes the rule id and a dedup key. For an audit event the key is the request it
  records (detectors.request_identity: its auditID and what is fixed when it is received, plus
  the body for a rule that reads it): kube-apiserver logs a long-running request (exec, attach,
  port-forward, watch) once at ResponseStarted and again at ResponseComplete, and a rule fires
  once per request, so both stages give the same alert id, while two requests that share an
  auditID give two. Other events use their own event id.
- A rule with `dedup_field` (detectors.sigma_rules) hashes that field's value instead, and its
  group key is the rule id and that value: one alert per value (CT-COR-005: per image digest).
  With `dedup_window` too, the id hashes the values and the window of event time, and the group
  key stays the entities': one alert per burst (CT-K8S-017: one webhook's install).
- `@timestamp` is the event's time; `event.ingested` is the event's own, so the alert does not
  depend on when it was computed.
- `alert.group_key` is the rule id and the entities involved: user, and namespace/object (the
  pod for exec and attach), for grouping and suppression downstream.
- The event's user, source, container, orchestrator and kubernetes groups are copied, without
  the raw audit dict; `event.original` keeps the triggering record byte for byte for evidence.
- A rule with `identity_from_event` (CT-RT-001) re-raises an external detector's alert as
  itself: `rule.name` is the detector's rule (a Falco rule), `message` its output line, `tags`
  its tags, `threat.*` from its MITRE tags (mitre_<tactic>, T<technique>), and the group key is
  the rule id, the detector's rule and the container (else the entities above), so grouping and
  suppression tell one Falco rule in one container from every other. `rule.id` stays ours.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from ctrail.event import Alert, AlertInfo, Event, EventInfo, Rule, Severity, Threat
from detectors.attack import threat_from_tags
from detectors.request_identity import request_key
from detectors.sigma_rules import CompiledRule

ALERT_DATASET: Final = "containertrail.alerts"
ALERT_MODULE: Final = "containertrail"
RULESET: Final = "containertrail"
# Falco's MITRE tags: `mitre_<tactic>` (mitre_privilege_escalation) and technique ids (T1059.004).
FALCO_TACTIC: Final = re.compile(r"mitre_([a-z_]+)")
FALCO_TECHNIQUE: Final = re.compile(r"T\d{4}(?:\.\d{3})?")


def build_alert(rule: CompiledRule, event: Event, severity: Severity,
                key: str | None = None) -> Alert:
    """`key`: the value of the rule's dedup_field, when it has one; it replaces the event's
    dedup key in the id and, unless it is a window's (dedup_window), the entities in the group
    key (one alert per value)."""
    info = event.event
    k8s = event.kubernetes
    detected = event.rule.name if rule.identity_from_event and event.rule is not None else None
    tags = detector_tags(event) if detected is not None else ()
    if key is not None and rule.dedup_window is None:
        group = f"{rule.id}|{key}"
    elif detected is not None:
        group = detected_group_key(rule.id, detected, event)
    else:
        group = group_key(rule.id, event)
    return Alert(
        timestamp=event.timestamp,
        event=EventInfo(
            id=alert_id(rule.id, f"value:{key}" if key is not None
                        else dedup_key(event, rule.reads_request_body)),
            kind="alert", category=info.category,
            type=info.type, action=rule.id, outcome=info.outcome, dataset=ALERT_DATASET,
            module=ALERT_MODULE, original=info.original, ingested=info.ingested,
            severity=int(severity)),
        rule=Rule(id=rule.id, name=detected or rule.title, description=rule.description,
                  reference=rule.reference, ruleset=RULESET),
        threat=detector_threat(tags) if detected is not None else rule.threat,
        alert=AlertInfo(severity=severity.word, group_key=group, count=1,
                        event_ids=(info.id,)),
        message=event.message if detected is not None else None,
        tags=tags,
        user=event.user, source=event.source, container=event.container,
        orchestrator=event.orchestrator,
        kubernetes=k8s.model_copy(update={"audit": None}) if k8s is not None else None)


def detector_tags(event: Event) -> tuple[str, ...]:
    """The tags the external detector gave its alert (Falco's `tags`)."""
    tags = (event.falco or {}).get("tags")
    return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()


def detector_threat(tags: tuple[str, ...]) -> Threat | None:
    """ECS threat.* from Falco's MITRE tags; None when it names none (nothing made up)."""
    sigma_tags = []
    for tag in tags:
        if tactic := FALCO_TACTIC.fullmatch(tag):
            sigma_tags.append(f"attack.{tactic.group(1)}")
        elif FALCO_TECHNIQUE.fullmatch(tag):
            sigma_tags.append(f"attack.{tag.lower()}")
    return threat_from_tags(sigma_tags)


def detected_group_key(rule_id: str, detected: str, event: Event) -> str:
    """The rule id, the external detector's rule and the container it fired in; without a
    container (a host process, a Kubernetes audit rule), the entities group_key names."""
    container = event.container.id if event.container is not None else None
    if container:
        return f"{rule_id}|{detected}|container:{container}"
    return f"{rule_id}|{detected}|{group_key(rule_id, event).split('|', 1)[1]}"


def alert_id(rule_id: str, key: str) -> str:
    return hashlib.blake2b(f"{rule_id}\x00{key}".encode(), digest_size=16).hexdigest()


def dedup_key(event: Event, with_body: bool = False) -> str:
    """The request an audit event records, the same at each of its stages
    (detectors.request_identity), else the event id."""
    audit = event.kubernetes.audit if event.kubernetes is not None else None
    key = request_key(audit, with_body) if audit else None
    return key or event.event.id


def group_key(rule_id: str, event: Event) -> str:
    user = event.user.name if event.user is not None else None
    namespace = event.kubernetes.namespace if event.kubernetes is not None else None
    return f"{rule_id}|{user or '-'}|{namespace or '-'}/{subject_name(event) or '-'}"


def subject_name(event: Event) -> str | None:
    """The object acted on: the pod when known, else the object the audit event references."""
    k8s = event.kubernetes
    if k8s is not None and k8s.pod is not None and k8s.pod.name:
        return k8s.pod.name
    orchestrator = event.orchestrator
    if orchestrator is not None and orchestrator.resource is not None:
        return orchestrator.resource.name
    ref = (k8s.audit or {}).get("objectRef") if k8s is not None else None
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None
