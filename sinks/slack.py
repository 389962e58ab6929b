"""Receiver: Slack, by incoming webhook or by the Web API's chat.postMessage, in Block Kit.

One message per alert says what happened (rule, severity), who (user.name), where (cluster,
namespace, pod, container, image and digest), how often it repeated (alert.count) and what to
run next (`ctrail timeline ...`, a Kibana link when `notify.kibana_url` is set). When alerts
arrive faster than Slack's pace (about one message per second per channel; a receiver is one
channel) the backlog goes out as one digest: N alerts, the top rules, the critical ones named.

Limits kept (Block Kit reference): at most 50 blocks; header text 150 characters; section text
3000; at most 10 section fields of 2000 each; button text 75 and URL 3000.
Answers: a webhook says 200 "ok"; chat.postMessage says 200 {"ok": true} or
{"ok": false, "error": ...}; both say 429 with Retry-After when pacing is needed.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Sequence

from pydantic import Field, model_validator

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import cut, facts, kibana_link, next_steps, subject, techniques, who
from sinks.notify.digest import Digest, digest_reason, digest_why, summarise
from sinks.notify.message import (
    DigestReceiverBase,
    HttpNotifier,
    Message,
    Outcome,
    Pending,
    Result,
    classify,
    one_per_alert,
    post_json,
    redact,
    secret_value,
    send_json,
)
from sinks.notify.report_notice import ReportNotice
from sinks.notify.routing import alert_severity

HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
MAX_FIELDS: Final = 10
EMOJI: Final = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":warning:"}
# chat.postMessage errors that say the message itself is bad; other errors (a revoked token,
# a channel the bot left) are the receiver's configuration: retried until someone fixes it.
BAD_MESSAGE: Final = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long",
                                "no_text", "invalid_arguments", "too_many_attachments"})


class SlackConfig(DigestReceiverBase):
    """A Slack channel: `webhook_url` (an incoming webhook), or `token` and `channel`."""

    type: Literal["slack"] = "slack"
    webhook_url: SecretRef | None = Field(None, description="Incoming webhook URL (a secret).")
    token: SecretRef | None = Field(None, description="Bot token for chat.postMessage.")
    channel: str | None = Field(None, description="Channel id or name, with `token`.")
    api_url: str = "https://slack.com/api"

    @model_validator(mode="after")
    def _one_way(self) -> "SlackConfig":
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set either webhook_url, or token and channel")
        if self.token is not None and not self.channel:
            raise ValueError("token needs a channel")
        return self

    def build(self, name: str, kibana_url: str | None) -> "SlackNotifier":
        return SlackNotifier(name, self, kibana_url)


def _text(kind: str, text: str, limit: int) -> dict[str, Any]:
    return {"type": kind, "text": cut(text, limit)}


def _escape(text: str) -> str:
    """Slack's escaping for text it parses (mrkdwn, and a message's top-level `text`): `&`, `<`
    and `>` as entities, so `<!channel>` or `<@U123>` in a user or pod name is shown, not acted
    on, and cannot forge a link (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _actions(url: str | None, action_id: str) -> list[dict[str, Any]]:
    if not url or len(url) > 3000:
        return []
    return [{"type": "actions", "elements": [{
        "type": "button", "text": _text("plain_text", "Open in Kibana", 75), "url": url,
        "action_id": action_id}]}]


def alert_message(alert: Alert, kibana_url: str | None) -> dict[str, Any]:
    """The Block Kit message for one alert (pure)."""
    severity = alert_severity(alert).word
    rule, user = alert.rule, who(alert)
    title = f"{EMOJI.get(severity, ':information_source:')} {severity.upper()}: {rule.name}"
    lines = [f"*{_escape(rule.name)}* (`{_escape(rule.id)}`), severity *{severity}*"]
    if rule.description:
        lines.append(_escape(rule.description))
    if techniques(alert):
        lines.append("ATT&amp;CK: " + ", ".join(techniques(alert)))
    shown = [*facts(alert), ("Repeated", f"{alert.alert.count}×")][:MAX_FIELDS]
    fields = [_text("mrkdwn", f"*{label}*\n{_escape(value)}", FIELD_MAX) for label, value in shown]
    steps = next_steps(alert)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _text("plain_text", title, HEADER_MAX)},
        {"type": "section", "text": _text("mrkdwn", "\n".join(lines), SECTION_MAX),
         "fields": fields}]
    if steps:
        blocks.append({"type": "section", "text": _text(
            "mrkdwn", "*What to run next*\n```" + _escape("\n".join(steps)) + "```", SECTION_MAX)})
    blocks += _actions(kibana_link(kibana_url, alert), "open_kibana")
    blocks.append({"type": "context", "elements": [_text(
        "mrkdwn", f"alert `{alert.event.id}` · group `{_escape(alert.alert.group_key)}` · "
        f"{alert.timestamp.isoformat()}", SECTION_MAX)]})
    summary = f"[{severity.upper()}] {rule.name} ({rule.id}) by {user or 'unknown'} in {subject(alert)}"
    # The fallback `text` is what notifications and old clients show: parsed like mrkdwn.
    return {"text": _escape(summary[:SECTION_MAX]), "blocks": blocks}


def digest_message(digest: Digest, kibana_url: str | None) -> dict[str, Any]:
    """One Block Kit message for many alerts (pure)."""
    intro = (f"*{digest.count}* alerts ({digest.repeats} occurrences) from "
             f"{digest.first.isoformat()} to {digest.last.isoformat()}, in one message because "
             f"{digest_why(digest.reason)}.\nBy severity: " + ", ".join(f"{w} {n}" for w, n in digest.severities))
    rules = [_text("mrkdwn", f"*{_escape(name)}* (`{_escape(rid)}`)\n{n} alerts", FIELD_MAX)
             for rid, name, n in digest.top_rules]
    places = ", ".join(f"{_escape(ns)} ({n})" for ns, n in digest.namespaces)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _text("plain_text", f"{digest.count} alerts ({digest.reason} "
                                         "digest)", HEADER_MAX)},
        {"type": "section", "text": _text("mrkdwn", intro, SECTION_MAX)},
        {"type": "section", "text": _text("mrkdwn", "*Top rules*", SECTION_MAX), "fields": rules},
        {"type": "section", "text": _text("mrkdwn", f"*Namespaces*: {places}", SECTION_MAX)}]
    if digest.critical:
        named = "\n".join(f"• {_escape(a.rule.name)}: {_escape(who(a) or 'unknown')} in "
                          f"{_escape(subject(a))} (`{a.event.id}`)" for a in digest.critical)
        blocks.append({"type": "section", "text": _text("mrkdwn", "*Critical*\n" + named,
                                                          SECTION_MAX)})
    blocks.append({"type": "context", "elements": [_text(
        "mrkdwn", "Run `ctrail alerts --since 1h` for every alert.", SECTION_MAX)]})
    if digest.critical:
        blocks += _actions(kibana_link(kibana_url, digest.critical[0]), "open_kibana")
    return {"text": _escape(f"ContainerTrail: {digest.count} alerts ({digest.reason})"),
            "blocks": blocks}


def report_message(notice: ReportNotice) -> dict[str, Any]:
    """A rendered report: its title, period, headline figures and a link (pure)."""
    facts = [_text("mrkdwn", f"*{_escape(label)}*\n{_escape(value)}", FIELD_MAX)
             for label, value in notice.summary[:MAX_FIELDS]]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _text("plain_text", notice.title, HEADER_MAX)},
        {"type": "section", "text": _text("mrkdwn", f"{notice.period}, generated "
                                          f"{notice.generated:%Y-%m-%d %H:%M} UTC.", SECTION_MAX),
         **({"fields": facts} if facts else {})}]
    if notice.link and len(notice.link) <= 3000:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": _text("plain_text", "Open the report", 75),
            "url": notice.link, "action_id": "open_report"}]})
    else:
        blocks.append({"type": "context", "elements": [_text(
            "mrkdwn", "Files: " + _escape(", ".join(p.name for p in notice.files)),
            SECTION_MAX)]})
    return {"text": _escape(f"{notice.title}: {notice.period}"), "blocks": blocks}


class SlackNotifier(HttpNotifier[SlackConfig]):
    def __init__(self, name: str, config: SlackConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self._url = self._token = None
        if config.webhook_url is not None:
            self._url = secret_value(config.webhook_url)
        else:
            assert config.token is not None
            self._token = secret_value(config.token)

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        reason = digest_reason(batch, budget, self.config.digest_min_alerts)
        if reason is not None:
            body = digest_message(summarise([p.alert for p in batch], reason), self.kibana_url)
            return [Message(tuple(p.seq for p in batch), body, "digest")]
        return one_per_alert(batch, budget, lambda alert: alert_message(alert, self.kibana_url))

    def report_message(self, seq: int, notice: ReportNotice) -> Message:
        return Message((seq,), report_message(notice), "report", notice.delivery_id)

    def post(self, message: Message) -> Result:
        if self._url is not None:
            return send_json(self.client, self._url, message.body)
        body = {**message.body, "channel": self.config.channel}
        response, error = post_json(self.client, f"{self.config.api_url}/chat.postMessage", body,
                                    {"Authorization": f"Bearer {self._token}"})
        if response is None:
            return Result(Outcome.RETRY, detail=error)
        if response.status_code != 200:
            return classify(response.status_code, response.headers, response.text[:200])
        answer = response.json()
        if answer.get("ok") is True:
            return Result(Outcome.DELIVERED, 200)
        error = str(answer.get("error", "unknown"))
        outcome = Outcome.REJECTED if error in BAD_MESSAGE else Outcome.RETRY
        return Result(outcome, 200, detail=redact(f"chat.postMessage: {error}"))
