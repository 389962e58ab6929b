"""Receiver: PagerDuty Events API v2 (POST https://events.pagerduty.com/v2/enqueue).

One incident per alert group: `dedup_key` is the alert's `alert.group_key` (hashed down when
longer than the API's 255 characters), so a repeated alert, a retry, or a replay after a crash
adds to the open incident instead of paging again. Pending alerts of one group are sent as one
trigger carrying the latest alert and the total count. A group with no new alert for
`resolve_after_secs` is resolved (omit it, `null`, to resolve by hand only).

Severity mapping (ours → PagerDuty's four): critical → critical, high → error,
medium → warning, low and informational → info.
Answers (Events API v2 overview): 202 accepted; 400 invalid event (never retried: kept as
rejected, with the API's reasons); 429 and 5xx retried later, as are network errors.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Sequence

import httpx
import orjson
from pydantic import Field, PositiveFloat

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import (
    bounded_key,
    headline,
    kibana_link,
    next_steps,
    techniques,
    where,
    who,
)
from sinks.notify.message import (
    HttpNotifier,
    Message,
    Pending,
    ReceiverBase,
    Result,
    by_group,
    secret_value,
    send_json,
)
from sinks.notify.routing import alert_severity

SEVERITY: Final = {"critical": "critical", "high": "error", "medium": "warning", "low": "info",
                   "informational": "info"}
DEDUP_KEY_MAX: Final = 255
SUMMARY_MAX: Final = 1024


class PagerDutyConfig(ReceiverBase):
    """A PagerDuty service, by the routing key of its Events API v2 integration."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretRef
    url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str | None = Field(None, description="payload.source when the alert names no "
                               "cluster (default: containertrail).")
    resolve_after_secs: PositiveFloat | None = Field(
        3600.0, description="Resolve a group's incident after this long without a new alert.")
    rate_per_sec: PositiveFloat = 2.0
    burst: int = Field(10, ge=1)

    def build(self, name: str, kibana_url: str | None) -> "PagerDutyNotifier":
        return PagerDutyNotifier(name, self, kibana_url)


def dedup_key(group_key: str) -> str:
    return bounded_key(group_key, DEDUP_KEY_MAX)


def pagerduty_event(alert: Alert, routing_key: str, *, count: int, first_seen: str,
                    alert_ids: Sequence[str], kibana_url: str | None = None,
                    source: str | None = None) -> dict[str, Any]:
    """The trigger for an alert group, built from its latest alert (pure)."""
    severity = alert_severity(alert).word
    place, user = where(alert), who(alert)
    summary = headline(alert) + (f" ({count}×)" if count > 1 else "")
    details = {"rule": {"id": alert.rule.id, "name": alert.rule.name,
                        "description": alert.rule.description},
               "severity": severity, "user": user, **place, "count": count,
               "first_seen": first_seen, "last_seen": alert.timestamp.isoformat(),
               "alert_ids": list(alert_ids)[-20:], "group_key": alert.alert.group_key,
               "attack_techniques": list(techniques(alert)), "next_steps": next_steps(alert)}
    payload: dict[str, Any] = {
        "summary": summary[:SUMMARY_MAX], "severity": SEVERITY.get(severity, "info"),
        "source": place.get("cluster") or source or "containertrail",
        "timestamp": alert.timestamp.isoformat(), "class": alert.rule.id,
        "component": place.get("pod") or place.get("container") or place.get("image")
        or "kubernetes",
        "custom_details": {k: v for k, v in details.items() if v not in (None, [], "")}}
    if "namespace" in place:
        payload["group"] = place["namespace"]
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": "trigger",
                             "dedup_key": dedup_key(alert.alert.group_key), "payload": payload,
                             "client": "ContainerTrail"}
    link = kibana_link(kibana_url, alert)
    if link:
        event["links"] = [{"href": link, "text": "Open in Kibana"}]
        event["client_url"] = kibana_url
    return event


class PagerDutyNotifier(HttpNotifier[PagerDutyConfig]):
    def __init__(self, name: str, config: PagerDutyConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self.resolve_after_secs = config.resolve_after_secs
        self._key = secret_value(config.routing_key)

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        """One trigger per group (first come, first sent), at most `budget` groups."""
        messages = []
        for group_key, rows in by_group(batch, budget):
            alerts = [p.alert for p in rows]
            body = pagerduty_event(
                alerts[-1], self._key, count=sum(a.alert.count for a in alerts),
                first_seen=alerts[0].timestamp.isoformat(),
                alert_ids=[a.event.id for a in alerts], kibana_url=self.kibana_url,
                source=self.config.source)
            messages.append(Message(tuple(p.seq for p in rows), body, "trigger",
                                    body["dedup_key"], group_key))
        return messages

    def resolve_message(self, group_key: str, key: str) -> Message:
        return Message((), {"routing_key": self._key, "event_action": "resolve",
                            "dedup_key": key}, "resolve", key, group_key)

    def post(self, message: Message) -> Result:
        return send_json(self.client, self.config.url, message.body, explain=_errors)


def _errors(response: httpx.Response) -> str:
    """What the API lists as wrong with an invalid event (400); nothing for other answers."""
    if response.status_code != 400:
        return ""
    try:
        return "; ".join(map(str, orjson.loads(response.content).get("errors", [])))
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:200]
