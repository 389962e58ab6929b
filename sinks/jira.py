"""Receiver: Jira (Cloud REST API v3, or v2 for Jira Data Center), one issue per alert group.

- The first alert of a group creates an issue (POST /rest/api/{v}/issue); the key Jira answers
  (e.g. SEC-12) is kept in the outbox's incidents table, so later alerts of the group, even
  after a restart, become comments on that issue (POST /rest/api/{v}/issue/{key}/comment), one
  comment for the alerts pending together. A comment on an issue someone deleted (404) creates
  a new issue instead.
- A group with no new alert for `resolve_after_secs` is transitioned (GET then POST
  /rest/api/{v}/issue/{key}/transitions): to the transition named `resolve_transition`, else the
  first whose target status is in the "done" category. An issue already done, or gone, is left
  as it is. A new alert after that opens a new issue.
- v3 writes descriptions and comments in the Atlassian Document Format; v2 in wiki markup, with
  the data escaped so a pod or user name cannot make a link or a macro.
- Auth: `user` (the account's email) and an API `token` as Basic (Jira Cloud), or only a
  personal access `token` as Bearer (Data Center).
Every issue is labelled `containertrail`, the rule id and `ctrail-group-<hash>` (a JQL handle for
a group's issues). Answers: 201 created; 204 transitioned; 400 {"errorMessages", "errors"} a
request Jira will never accept (kept as rejected, with its reasons); 401/403/404 on create are
configuration (retried until fixed); 429 and 5xx retried later.
A create whose answer was lost (a network error or a 5xx: Jira may have made the issue) is
not simply sent again: the next attempt for that group first searches for its open issue by
the group label and comments on it if found. Only a crash in that window can still make two.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Final, Literal, Sequence
from urllib.parse import quote

import httpx
import orjson
from pydantic import Field, PositiveFloat

from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.context import cut, facts, headline, kibana_link, next_steps
from sinks.notify.message import (
    HttpNotifier,
    Message,
    Outcome,
    Pending,
    ReceiverBase,
    Result,
    by_group,
    classify,
    post_json,
    redact,
    register_secret,
    secret_value,
)
from sinks.notify.routing import alert_severity

SUMMARY_MAX: Final = 255
TEXT_MAX: Final = 30000            # Jira refuses a text field over 32 767 characters
WIKI_SPECIAL: Final = re.compile(r"([\\\[\]{}*_+^~?|!#\-])")
# A document, independent of the format: (kind, text[, value]).
Block = tuple[str, ...]


class JiraConfig(ReceiverBase):
    """A Jira project that gets an issue per alert group."""

    type: Literal["jira"] = "jira"
    url: str = Field(description="The site, e.g. https://acme.atlassian.net.")
    api_version: Literal[2, 3] = Field(3, description="3 for Jira Cloud, 2 for Data Center.")
    user: str | None = Field(None, description="The account's email (Jira Cloud: Basic auth "
                             "with the API token); absent: the token is a Bearer PAT.")
    token: SecretRef = Field(description="API token or personal access token (a secret).")
    project: str = Field(description="The project key, e.g. SEC.")
    issue_type: str = "Task"
    labels: tuple[str, ...] = ("containertrail",)
    priorities: dict[str, str] = Field(
        default_factory=dict, description="Severity word -> Jira priority name, e.g. "
        "{critical: Highest, high: High}; empty: Jira's default priority.")
    resolve_transition: str | None = Field(
        None, description="Transition (or target status) name used to resolve; default: the "
        "first transition into the 'done' category.")
    resolve_after_secs: PositiveFloat | None = Field(
        86400.0, description="Resolve a group's issue after this long without a new alert.")

    def build(self, name: str, kibana_url: str | None) -> "JiraNotifier":
        return JiraNotifier(name, self, kibana_url)


def group_label(group_key: str) -> str:
    return "ctrail-group-" + hashlib.blake2b(group_key.encode(), digest_size=8).hexdigest()


def document(alerts: Sequence[Alert], kibana_url: str | None, opening: str) -> list[Block]:
    """What an issue or comment says about the alerts of one group, latest last (pure)."""
    alert = alerts[-1]
    severity = alert_severity(alert).word
    count = sum(a.alert.count for a in alerts)
    blocks: list[Block] = [("para", opening),
                           ("heading", f"{alert.rule.name} ({alert.rule.id}), {severity}")]
    if alert.rule.description:
        blocks.append(("para", alert.rule.description))
    told = [*facts(alert), ("Alerts", f"{len(alerts)} ({count} occurrences)"),
             ("First", alerts[0].timestamp.isoformat()), ("Last", alert.timestamp.isoformat()),
             ("Alert ids", ", ".join(a.event.id for a in alerts[-20:])),
             ("Group", alert.alert.group_key)]
    blocks += [("fact", label, value) for label, value in told]
    steps = next_steps(alert)
    if steps:
        blocks += [("heading", "What to run next"), ("code", "\n".join(steps))]
    link = kibana_link(kibana_url, alert)
    if link:
        blocks.append(("link", "Open in Kibana", link))
    return blocks


def _text(text: str, marks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": cut(text, TEXT_MAX // 4) or "-"}
    if marks:
        node["marks"] = marks
    return node


def to_adf(blocks: Sequence[Block]) -> dict[str, Any]:
    """The Atlassian Document Format (REST API v3)."""
    content: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    for block in blocks:
        if block[0] == "fact":
            facts.append({"type": "listItem", "content": [{"type": "paragraph", "content": [
                _text(f"{block[1]}: ", [{"type": "strong"}]), _text(block[2])]}]})
            continue
        if facts:
            content.append({"type": "bulletList", "content": facts})
            facts = []
        kind, text = block[0], block[1]
        if kind == "heading":
            content.append({"type": "heading", "attrs": {"level": 3}, "content": [_text(text)]})
        elif kind == "code":
            content.append({"type": "codeBlock", "attrs": {}, "content": [_text(text)]})
        elif kind == "link":
            content.append({"type": "paragraph", "content": [
                _text(text, [{"type": "link", "attrs": {"href": block[2]}}])]})
        else:
            content.append({"type": "paragraph", "content": [_text(text)]})
    if facts:
        content.append({"type": "bulletList", "content": facts})
    return {"type": "doc", "version": 1, "content": content}


def wiki_escape(text: str) -> str:
    return WIKI_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def to_wiki(blocks: Sequence[Block]) -> str:
    """Jira wiki markup (REST API v2), every value escaped."""
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "fact":
            lines.append(f"* *{wiki_escape(block[1])}:* {wiki_escape(block[2])}")
        elif kind == "heading":
            lines.append(f"h3. {wiki_escape(block[1])}")
        elif kind == "code":
            lines.append("{noformat}\n" + block[1].replace("{noformat}", "") + "\n{noformat}")
        elif kind == "link":
            lines.append(f"[{wiki_escape(block[1])}|{block[2].replace(']', '%5D')}]")
        else:
            lines.append(wiki_escape(block[1]))
    return cut("\n".join(lines), TEXT_MAX)


def pick_transition(transitions: Sequence[dict[str, Any]], wanted: str | None) -> str | None:
    """The id of the transition that resolves: by name (or target status name), else the
    first into the "done" status category."""
    for transition in transitions:
        target = transition.get("to") or {}
        if wanted is not None:
            if wanted.casefold() in (str(transition.get("name", "")).casefold(),
                                     str(target.get("name", "")).casefold()):
                return str(transition["id"])
        elif (target.get("statusCategory") or {}).get("key") == "done":
            return str(transition["id"])
    return None


class JiraNotifier(HttpNotifier[JiraConfig]):
    def __init__(self, name: str, config: JiraConfig, kibana_url: str | None) -> None:
        super().__init__(name, config, kibana_url)
        self.resolve_after_secs = config.resolve_after_secs
        self.keeps_incidents = True          # its issue key, even when it never resolves
        token = secret_value(config.token)
        if config.user:
            basic = base64.b64encode(f"{config.user}:{token}".encode()).decode()
            register_secret(basic)
            self._headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        else:
            self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._api = f"{config.url.rstrip('/')}/rest/api/{config.api_version}"
        # Cloud's search is /search/jql (the old /search is gone there); Data Center's /search.
        self._search = f"{self._api}/search/jql" if config.api_version == 3 else f"{self._api}/search"
        self._uncertain: set[str] = set()    # groups whose last create may have been made

    def _format(self, blocks: Sequence[Block]) -> Any:
        return to_adf(blocks) if self.config.api_version == 3 else to_wiki(blocks)

    def create_fields(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        alert = alerts[-1]
        severity = alert_severity(alert).word
        summary = headline(alert)
        fields: dict[str, Any] = {
            "project": {"key": self.config.project},
            "issuetype": {"name": self.config.issue_type},
            "summary": cut(" ".join(summary.splitlines()), SUMMARY_MAX),
            "description": self._format(document(alerts, self.kibana_url,
                                                 "ContainerTrail raised this alert.")),
            "labels": list(dict.fromkeys([*self.config.labels, alert.rule.id.replace(" ", "_"),
                                          group_label(alert.alert.group_key)]))}
        if severity in self.config.priorities:
            fields["priority"] = {"name": self.config.priorities[severity]}
        return fields

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        """One request per group: a comment on its open issue, else a new issue."""
        messages = []
        for group_key, rows in by_group(batch, budget):
            alerts = [p.alert for p in rows]
            issue = rows[0].incident or None
            body: dict[str, Any] = {
                "issue": issue, "create": {"fields": self.create_fields(alerts)},
                "comment": {"body": self._format(document(
                    alerts, self.kibana_url, f"{len(alerts)} more alert(s) in this group."))}}
            messages.append(Message(tuple(p.seq for p in rows), body,
                                    "comment" if issue else "trigger", issue or "", group_key))
        return messages

    def resolve_message(self, group_key: str, key: str) -> Message:
        return Message((), {"issue": key}, "resolve", key, group_key)

    def post(self, message: Message) -> Result:
        if message.kind == "resolve":
            return self._resolve(message.key)
        issue = message.body.get("issue")
        if issue:
            response, error = post_json(self.client, f"{self._api}/issue/{quote(issue)}/comment",
                                        message.body["comment"], self._headers)
            if response is None:
                return Result(Outcome.RETRY, detail=error)
            if response.status_code != 404:
                return _outcome(response)
        group = message.group_key or ""
        if group in self._uncertain:
            found = self._open_issue(group)
            if isinstance(found, Result):
                return found
            self._uncertain.discard(group)
            if found:
                result = self.post(Message(message.seqs, {**message.body, "issue": found},
                                           "comment", found, group))
                return result if result.reference else Result(
                    result.outcome, result.status, result.retry_after_secs, result.detail,
                    found if result.outcome is Outcome.DELIVERED else "")
        response, error = post_json(self.client, f"{self._api}/issue", message.body["create"],
                                    self._headers)
        if response is None or response.status_code >= 500:
            self._uncertain.add(group)
        if response is None:
            return Result(Outcome.RETRY, detail=error)
        result = _outcome(response)
        if result.outcome is Outcome.DELIVERED:
            try:
                key = str(orjson.loads(response.content)["key"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                key = ""
            return Result(Outcome.DELIVERED, response.status_code, reference=key)
        return result

    def _open_issue(self, group: str) -> str | Result:
        """The key of the group's issue not yet done ("" when none), or why we cannot tell."""
        jql = f'labels = "{group_label(group)}" AND statusCategory != Done ORDER BY created DESC'
        try:
            response = self.client.get(self._search, headers=self._headers,
                                       params={"jql": jql, "fields": "status", "maxResults": 1})
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, detail=redact(f"{type(exc).__name__}: {exc}"))
        if response.status_code == 400:     # a search Jira refuses: better a second issue
            return ""                        # than alerts that never go out
        if response.status_code != 200:
            return _outcome(response)
        try:
            issues = orjson.loads(response.content).get("issues", [])
            return str(issues[0]["key"]) if issues else ""
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return Result(Outcome.RETRY, response.status_code, detail="unreadable search answer")

    def _resolve(self, issue: str) -> Result:
        url = f"{self._api}/issue/{quote(issue)}/transitions"
        try:
            response = self.client.get(url, headers=self._headers)
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, detail=redact(f"{type(exc).__name__}: {exc}"))
        if response.status_code == 404:
            return Result(Outcome.DELIVERED, 404, detail=f"{issue} is gone")
        if not 200 <= response.status_code < 300:
            return _outcome(response)
        try:
            transitions = orjson.loads(response.content).get("transitions", [])
        except (orjson.JSONDecodeError, AttributeError):
            return Result(Outcome.RETRY, response.status_code, detail="unreadable transitions")
        chosen = pick_transition(transitions, self.config.resolve_transition)
        if chosen is None:             # already done, or a workflow without a way there
            return Result(Outcome.DELIVERED, response.status_code,
                          detail=f"{issue}: no resolving transition from its status")
        done, error = post_json(self.client, url, {"transition": {"id": chosen}}, self._headers)
        if done is None:
            return Result(Outcome.RETRY, detail=error)
        return _outcome(done)


def _outcome(response: httpx.Response) -> Result:
    detail = response.text[:300]
    if response.status_code == 400:        # Jira lists what is wrong: keep it
        try:
            answer = orjson.loads(response.content)
            detail = "; ".join([*map(str, answer.get("errorMessages", [])),
                                *(f"{k}: {v}" for k, v in answer.get("errors", {}).items())])
        except (orjson.JSONDecodeError, AttributeError):
            pass
    return classify(response.status_code, response.headers, detail)
