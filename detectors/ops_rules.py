"""The pipeline's own rules (CT-OPS-001..004): not Sigma rules, since what they watch is not an
event but the pipeline itself (a source gone quiet, dead letters, the evidence archive, a
notification receiver). Their alerts are Alerts like any other, published on ctrail.alerts by
ctrail.runtime.self_watch, so they are stored, notified, archived and suppressed as any alert.

Each condition is a state with a beginning and an end: one alert when it begins (event.type
start, outcome failure) and one when it ends (event.type end, outcome success), with the same
group key, so a receiver that groups by key sees one incident open and close. Alert ids come from
the rule, the subject and when the condition began, so raising it again after a restart or a
redelivery gives the same id (the store keeps one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from ctrail.event import Alert, AlertInfo, EventInfo, Rule, Severity
from detectors.alerts import ALERT_DATASET, ALERT_MODULE, RULESET


@dataclass(frozen=True, slots=True)
class OpsRule:
    id: str
    title: str
    description: str
    severity: Severity
    category: str                       # ECS event.category of its alerts


SILENT_SOURCE: Final = OpsRule(
    "CT-OPS-001", "Audit Source Silent",
    "A source that was sending (a webhook, a tailed file, a cloud source, Falco) sent nothing for "
    "longer than its quiet period, on arrival time or on event time: audit records may be lost "
    "(PCI DSS 10.7 asks for an alert when a logging control fails). Resolved when it sends again.",
    Severity.HIGH, "host")
DEAD_LETTER_RATE: Final = OpsRule(
    "CT-OPS-002", "Dead-Letter Rate Above Threshold",
    "The share of a source's records dead-lettered within the window exceeds the threshold: a "
    "format change or a broken sender; the records are kept in the dead-letter queue (`ctrail "
    "dlq list`, `ctrail dlq replay` after a fix). Resolved when the rate falls back.",
    Severity.MEDIUM, "process")
EVIDENCE_FAILED: Final = OpsRule(
    "CT-OPS-003", "Evidence Verification Failed or Segment Not Sealed",
    "The evidence archive could not seal a segment, or its verification found the hash chain or "
    "a sealed segment changed: the audit trail's integrity guarantee is at risk.",
    Severity.CRITICAL, "file")
CIRCUIT_OPEN: Final = OpsRule(
    "CT-OPS-004", "Notification Receiver Unreachable",
    "A notification receiver's circuit breaker has stayed open longer than its limit: alerts to "
    "it wait in the outbox undelivered. Resolved when the circuit closes.",
    Severity.HIGH, "network")
OPS_RULES: Final = {rule.id: rule for rule in
                    (SILENT_SOURCE, DEAD_LETTER_RATE, EVIDENCE_FAILED, CIRCUIT_OPEN)}


def ops_alert(rule: OpsRule, subject: str, since: float, at: float, message: str,
              begins: bool = True, tags: tuple[str, ...] = ()) -> Alert:
    """An alert of `rule` about `subject` (a source, a receiver, the archive): `since` is when
    the condition began (with the rule and subject, the alert's identity), `at` its time."""
    group = f"{rule.id}|{subject}"
    raw = f"{group}\x00{since!r}\x00{'start' if begins else 'end'}".encode()
    return Alert(
        timestamp=datetime.fromtimestamp(at, timezone.utc),
        event=EventInfo(id=hashlib.blake2b(raw, digest_size=16).hexdigest(), kind="alert",
                        category=(rule.category,), type=("start",) if begins else ("end",),
                        action=rule.id, outcome="failure" if begins else "success",
                        dataset=ALERT_DATASET, module=ALERT_MODULE, original="",
                        ingested=datetime.now(timezone.utc), severity=int(rule.severity)),
        rule=Rule(id=rule.id, name=rule.title, description=rule.description, ruleset=RULESET),
        alert=AlertInfo(severity=rule.severity.word, group_key=group),
        tags=tags, message=message)


def resolved(alert: Alert) -> bool:
    """Whether an alert of these rules says its condition ended."""
    return "end" in alert.event.type
