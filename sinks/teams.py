"""Receiver: Microsoft Teams, by a Workflows webhook ("Post to a channel when a webhook request
is received"), as an Adaptive Card.

The request is a Bot Framework message with one Adaptive Card attachment:
    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
      "contentUrl": null, "content": {"type": "AdaptiveCard", "version": "1.4", "body": [...],
      "actions": [...]}}]}
One card per alert says what happened, who, where, how often and what to run next (an "Open in
Kibana" action when `notify.kibana_url` is set); a backlog beyond the pace goes as one digest
card; a rendered report goes as a summary card with a link to it.
Teams keeps a message under 28 KB: text is cut, facts are capped, so a card always fits.
Answers: Workflows says 202 Accepted; 400 a card it cannot read; 401/403/404 a flow that was
turned off or a URL revoked (retried until fixed); 429 when throttled.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, Sequence

from pydantic import Field

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import cut, facts, kibana_link, next_steps, subject, techniques, who
from sinks.notify.digest import Digest, digest_reason, digest_why, summarise
from sinks.notify.message import (
    DigestReceiverBase,
    HttpNotifier,
    Message,
    Pending,
    Result,
    one_per_alert,
    secret_value,
    send_json,
)
from sinks.notify.report_notice import ReportNotice
from sinks.notify.routing import alert_severity

CARD_TYPE: Final = "application/vnd.microsoft.card.adaptive"
CARD_VERSION: Final = "1.4"
TEXT_MAX: Final = 2000
MAX_FACTS: Final = 12
COLOUR: Final = {"critical": "Attention", "high": "Attention", "medium": "Warning"}
# CommonMark's backslash escapes for what Teams' Markdown subset acts on in a TextBlock or a
# fact: a pod or user name cannot make a link, emphasis, code or a list (a list or quote only
# starts a line; a hyphen inside a name is left alone).
MARKDOWN: Final = re.compile(r"([\\`*_\[\]~])")
LINE_START: Final = re.compile(r"(?m)^(\s*)([-+#>])")
NUMBERED: Final = re.compile(r"(?m)^(\s*\d+)\.")


class TeamsConfig(DigestReceiverBase):
    """A Teams channel, by the URL of its Workflows webhook (a secret: it carries a signature)."""

    type: Literal["teams"] = "teams"
    webhook_url: SecretRef = Field(description="The Workflows webhook URL (a secret).")

    def build(self, name: str, kibana_url: str | None) -> "TeamsNotifier":
        return TeamsNotifier(name, self, kibana_url)


def plain(text: str, limit: int = TEXT_MAX) -> str:
    text = LINE_START.sub(r"\1\\\2", MARKDOWN.sub(r"\\\1", cut(text, limit)))
    return NUMBERED.sub(r"\1\\.", text)


def text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def fact_set(facts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": plain(title, 100), "value": plain(value, 500)}
                                         for title, value in facts[:MAX_FACTS]]}


def open_url(title: str, url: str | None) -> list[dict[str, Any]]:
    return [{"type": "Action.OpenUrl", "title": title, "url": url}] if url else []


def card_message(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """The Workflows webhook's envelope around one Adaptive Card."""
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "type": "AdaptiveCard", "version": CARD_VERSION, "body": body,
                            "msteams": {"width": "Full"}}
    if actions:
        card["actions"] = actions
    return {"type": "message",
            "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": card}]}


def alert_card(alert: Alert, kibana_url: str | None) -> dict[str, Any]:
    """The card for one alert (pure)."""
    severity = alert_severity(alert).word
    rule = alert.rule
    lines = [f"{plain(rule.name)} ({plain(rule.id)}), severity {severity}"]
    if rule.description:
        lines.append(plain(rule.description))
    ids = techniques(alert)
    if ids:
        lines.append("ATT&CK: " + ", ".join(plain(t, 20) for t in ids))
    body = [text_block(plain(f"{severity.upper()}: {rule.name} in {subject(alert)}", 300),
                       weight="Bolder", size="Medium", color=COLOUR.get(severity, "Default")),
            text_block("\n\n".join(lines)),
            fact_set([*facts(alert), ("Repeated", f"{alert.alert.count}×")])]
    steps = next_steps(alert)
    if steps:
        body += [text_block("What to run next", weight="Bolder"),
                 text_block(plain("\n\n".join(steps)), fontType="Monospace")]
    body.append(text_block(plain(f"alert {alert.event.id} · group {alert.alert.group_key} · "
                                 f"{alert.timestamp.isoformat()}", 600),
                           isSubtle=True, size="Small"))
    return card_message(body, open_url("Open in Kibana", kibana_link(kibana_url, alert)))


def digest_card(digest: Digest, kibana_url: str | None) -> dict[str, Any]:
    """One card for many alerts (pure)."""
    body = [text_block(f"{digest.count} alerts ({digest.reason} digest)", weight="Bolder",
                       size="Medium"),
            text_block(f"{digest.count} alerts ({digest.repeats} occurrences) from "
                       f"{digest.first.isoformat()} to {digest.last.isoformat()}, in one message "
                       f"because {digest_why(digest.reason)}. By severity: "
                       + ", ".join(f"{w} {n}" for w, n in digest.severities)),
            text_block("Top rules", weight="Bolder"),
            fact_set([(f"{name} ({rid})", f"{n} alerts") for rid, name, n in digest.top_rules]),
            text_block("Namespaces: " + ", ".join(f"{plain(ns, 100)} ({n})"
                                                  for ns, n in digest.namespaces))]
    if digest.critical:
        body += [text_block("Critical", weight="Bolder", color="Attention"),
                 fact_set([(a.rule.name, f"{who(a) or 'unknown'} in {subject(a)} ({a.event.id})")
                           for a in digest.critical])]
    body.append(text_block("Run ctrail alerts --since 1h for every alert.", isSubtle=True))
    link = kibana_link(kibana_url, digest.critical[0]) if digest.critical else None
    return card_message(body, open_url("Open in Kibana", link))


def report_card(notice: ReportNotice) -> dict[str, Any]:
    """A rendered report: its title, period, headline figures and a link (pure)."""
    body = [text_block(plain(notice.title, 300), weight="Bolder", size="Medium"),
            text_block(f"{notice.period}, generated {notice.generated:%Y-%m-%d %H:%M} UTC.")]
    if notice.summary:
        body.append(fact_set(list(notice.summary)))
    if not notice.link:
        body.append(text_block(plain("Files: " + ", ".join(p.name for p in notice.files)),
                               isSubtle=True))
    return card_message(body, open_url("Open the report", notice.link))


class TeamsNotifier(HttpNotifier[TeamsConfig]):
    def __init__(self, name: str, config: TeamsConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self._url = secret_value(config.webhook_url)

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        reason = digest_reason(batch, budget, self.config.digest_min_alerts)
        if reason is not None:
            body = digest_card(summarise([p.alert for p in batch], reason), self.kibana_url)
            return [Message(tuple(p.seq for p in batch), body, "digest")]
        return one_per_alert(batch, budget, lambda alert: alert_card(alert, self.kibana_url))

    def report_message(self, seq: int, notice: ReportNotice) -> Message:
        return Message((seq,), report_card(notice), "report", notice.delivery_id)

    def post(self, message: Message) -> Result:
        return send_json(self.client, self._url, message.body)
