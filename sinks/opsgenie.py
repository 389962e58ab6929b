"""Receiver: Opsgenie Alert API v2 (https://api.opsgenie.com, or https://api.eu.opsgenie.com).

One Opsgenie alert per alert group: `alias` is the group key (hashed down when longer than the
API's 512 characters). Opsgenie keeps one open alert per alias and counts a create with the same
alias as a repeat, so a repeated alert, a retry, or a replay after a crash adds to the open alert
instead of paging again. Pending alerts of one group go as one create carrying the latest alert
and the total count. A group with no new alert for `resolve_after_secs` is closed by alias
(POST /v2/alerts/{alias}/close?identifierType=alias); omit it (`null`) to close by hand only.

Requests carry `Authorization: GenieKey <key>` (an API integration's key).
Severity mapping (ours → Opsgenie priority): critical P1, high P2, medium P3, low P4,
informational P5. Field limits kept: message 130 characters, alias 512, description 15 000,
entity 512, source 100, at most 20 tags of 50, details 8 000 characters in all.
Answers: 202 {"result": "Request will be processed", "took": ..., "requestId": ...}; 422 (or
400) a request it cannot process (never retried: kept as rejected, with its reasons); 401/403 a
key revoked (retried until fixed); 429 and 5xx retried later, as are network errors.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Sequence
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import (
    bounded_key,
    cut,
    headline,
    kibana_link,
    next_steps,
    subject,
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

PRIORITY: Final = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4",
                   "informational": "P5"}
MESSAGE_MAX: Final = 130
ALIAS_MAX: Final = 512
DESCRIPTION_MAX: Final = 15000
DETAILS_MAX: Final = 8000
TAGS_MAX: Final = 20
TAG_MAX: Final = 50
SOURCE: Final = "ContainerTrail"


class Responder(BaseModel):
    """Who Opsgenie notifies: a team, user, escalation or schedule, by name (or username)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["team", "user", "escalation", "schedule"]
    name: str

    def as_api(self) -> dict[str, str]:
        return {"type": self.type, ("username" if self.type == "user" else "name"): self.name}


class OpsgenieConfig(ReceiverBase):
    """An Opsgenie API integration, by its key."""

    type: Literal["opsgenie"] = "opsgenie"
    api_key: SecretRef = Field(description="The API integration's key (a secret).")
    url: str = Field("https://api.opsgenie.com", description="https://api.eu.opsgenie.com for "
                     "EU accounts.")
    responders: tuple[Responder, ...] = ()
    tags: tuple[str, ...] = Field(("containertrail",), description="Added to every alert.")
    resolve_after_secs: PositiveFloat | None = Field(
        3600.0, description="Close a group's alert after this long without a new alert.")
    rate_per_sec: PositiveFloat = 2.0
    burst: int = Field(10, ge=1)

    def build(self, name: str, kibana_url: str | None) -> "OpsgenieNotifier":
        return OpsgenieNotifier(name, self, kibana_url)


def alias(group_key: str) -> str:
    return bounded_key(group_key, ALIAS_MAX)


def _details(fields: dict[str, str]) -> dict[str, str]:
    """String values only, at most DETAILS_MAX characters of keys and values in all."""
    out: dict[str, str] = {}
    room = DETAILS_MAX
    for key, value in fields.items():
        value = cut(value, max(1, min(500, room - len(key))))
        if not value or len(key) + len(value) > room:
            break
        out[key] = value
        room -= len(key) + len(value)
    return out


def create_alert(alert: Alert, *, count: int, first_seen: str, alert_ids: Sequence[str],
                 responders: Sequence[Responder] = (), tags: Sequence[str] = (),
                 kibana_url: str | None = None) -> dict[str, Any]:
    """The create request for an alert group, built from its latest alert (pure)."""
    severity = alert_severity(alert).word
    place, user = where(alert), who(alert)
    message = headline(alert) + (f" ({count}×)" if count > 1 else "")
    lines = [f"{alert.rule.name} ({alert.rule.id}), severity {severity}."]
    if alert.rule.description:
        lines.append(alert.rule.description)
    lines += [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in place.items()]
    lines.append(f"Alerts: {len(alert_ids)} ({count} occurrences), first {first_seen}, "
                 f"last {alert.timestamp.isoformat()}.")
    steps = next_steps(alert)
    if steps:
        lines += ["", "What to run next:", *steps]
    link = kibana_link(kibana_url, alert)
    if link:
        lines += ["", f"Open in Kibana: {link}"]
    all_tags = [*tags, alert.rule.id, f"severity:{severity}", *techniques(alert)]
    details = _details({"rule_id": alert.rule.id, "user": user or "", **place,
                        "count": str(count), "first_seen": first_seen,
                        "last_seen": alert.timestamp.isoformat(),
                        "group_key": alert.alert.group_key,
                        "alert_ids": ",".join(list(alert_ids)[-20:])})
    body: dict[str, Any] = {
        "message": cut(message, MESSAGE_MAX), "alias": alias(alert.alert.group_key),
        "description": cut("\n".join(lines), DESCRIPTION_MAX),
        "tags": list(dict.fromkeys(cut(t, TAG_MAX) for t in all_tags if t))[:TAGS_MAX],
        "details": {k: v for k, v in details.items() if v},
        "entity": cut(place.get("pod") and f"{place.get('namespace', '-')}/{place['pod']}"
                       or subject(alert), ALIAS_MAX),
        "source": SOURCE, "priority": PRIORITY.get(severity, "P5")}
    if responders:
        body["responders"] = [r.as_api() for r in responders]
    return body


class OpsgenieNotifier(HttpNotifier[OpsgenieConfig]):
    def __init__(self, name: str, config: OpsgenieConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self.resolve_after_secs = config.resolve_after_secs
        self._headers = {"Authorization": f"GenieKey {secret_value(config.api_key)}"}

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        """One create per group (first come, first sent), at most `budget` groups."""
        messages = []
        for group_key, rows in by_group(batch, budget):
            alerts = [p.alert for p in rows]
            body = create_alert(alerts[-1], count=sum(a.alert.count for a in alerts),
                                first_seen=alerts[0].timestamp.isoformat(),
                                alert_ids=[a.event.id for a in alerts],
                                responders=self.config.responders, tags=self.config.tags,
                                kibana_url=self.kibana_url)
            messages.append(Message(tuple(p.seq for p in rows), body, "trigger", body["alias"],
                                    group_key))
        return messages

    def resolve_message(self, group_key: str, key: str) -> Message:
        return Message((), {"source": SOURCE, "note": "No new alert in this group for "
                            f"{self.resolve_after_secs:g} s: closed by ContainerTrail."},
                       "resolve", key, group_key)

    def post(self, message: Message) -> Result:
        base = self.config.url.rstrip("/")
        url = (f"{base}/v2/alerts/{quote(message.key, safe='')}/close?identifierType=alias"
               if message.kind == "resolve" else f"{base}/v2/alerts")
        return send_json(self.client, url, message.body, self._headers, explain=_reasons)


def _reasons(response: httpx.Response) -> str:
    """The API's reasons for a request it cannot process (400, 422: rejected, never retried)."""
    if response.status_code not in (400, 422):
        return response.text[:200]
    try:
        answer = orjson.loads(response.content)
        return f"{answer.get('message', '')} {answer.get('errors', '')}"[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:300]
