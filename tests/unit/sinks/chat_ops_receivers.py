"""Local receivers for Microsoft Teams, Opsgenie and Jira that check each request against the
documented shape of the real API and answer as it does (the pattern of receivers.py).

- Teams Workflows webhook ("Post to a channel when a webhook request is received"): a message
  {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
  "content": <Adaptive Card>}]}; the card: type AdaptiveCard, version 1.0-1.5, body elements
  of known types (TextBlock needs text; FactSet facts of {title, value} strings; Container
  items; ColumnSet columns), actions Action.OpenUrl (title, absolute url) or ShowCard; the
  whole message under 28 KB. Answers 202 Accepted with an empty body.
- Opsgenie Alert API v2 (Authorization: GenieKey <key>): POST /v2/alerts: message required
  (<= 130), alias <= 512, description <= 15000, responders [{type team|user|escalation|schedule,
  id|name|username}], visibleTo, actions <= 10 of <= 50, tags <= 20 of <= 50, details string
  map (<= 8000 characters), entity <= 512, source <= 100, priority P1-P5, user <= 100,
  note <= 25000; POST /v2/alerts/{identifier}/close?identifierType=id|tiny|alias: optional
  user, source, note. 202 {"result": "Request will be processed", "took", "requestId"};
  422 {"message", "errors", "took", "requestId"}; 401 without a valid key. An open alert with
  the same alias absorbs a create (its count grows), as Opsgenie's de-duplication does.
- Jira Cloud REST API v3 (Basic email:token): POST /rest/api/3/issue {"fields": {project {key},
  issuetype {name|id}, summary (one line, <= 255), description (ADF), labels (no spaces),
  priority {name}}} -> 201 {"id", "key", "self"}; POST /rest/api/3/issue/{key}/comment
  {"body": ADF} -> 201; GET .../transitions -> 200 {"transitions": [...]}; POST .../transitions
  {"transition": {"id"}} -> 204; GET /rest/api/3/search/jql?jql=...&fields=...&maxResults=N
  -> 200 {"issues": [{"id", "key", "fields"}], "isLast"} (the JQL we send: labels = "L" AND
  statusCategory != Done); 400 {"errorMessages", "errors"}; 404 for an unknown issue.
  ADF: {"type": "doc", "version": 1, "content": [...]}, block nodes paragraph, heading
  (attrs.level 1-6), bulletList > listItem > paragraph, codeBlock; inline text nodes with a
  non-empty text and marks strong | em | code | link (attrs.href).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from receivers import Delivery, Receiver

Answer = tuple[int, dict[str, str], bytes | dict[str, Any]]

# ---------------------------------------------------------------- Teams

CARD_VERSIONS = {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}
CARD_ELEMENTS = {"TextBlock", "FactSet", "Container", "ColumnSet", "Image", "ActionSet",
                 "RichTextBlock"}


def _element_problems(element: Any, at: str) -> list[str]:
    if not isinstance(element, dict):
        return [f"{at}: not an object"]
    kind = element.get("type")
    if kind not in CARD_ELEMENTS:
        return [f"{at}: unknown element type {kind!r}"]
    if kind == "TextBlock" and (not isinstance(element.get("text"), str) or not element["text"]):
        return [f"{at}: a TextBlock needs text"]
    if kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not facts:
            return [f"{at}: a FactSet needs facts"]
        return [f"{at}.facts[{n}]: title and value must be strings" for n, fact in
                enumerate(facts) if not isinstance(fact, dict) or not isinstance(
                    fact.get("title"), str) or not isinstance(fact.get("value"), str)]
    if kind == "Container":
        return [p for n, item in enumerate(element.get("items") or [None])
                for p in _element_problems(item, f"{at}.items[{n}]")]
    if kind == "ColumnSet":
        return [p for c, column in enumerate(element.get("columns", []))
                for n, item in enumerate(column.get("items", []))
                for p in _element_problems(item, f"{at}.columns[{c}].items[{n}]")]
    return []


def _action_problems(action: Any, at: str) -> list[str]:
    if not isinstance(action, dict) or action.get("type") not in {"Action.OpenUrl",
                                                                 "Action.ShowCard"}:
        return [f"{at}: only Action.OpenUrl and Action.ShowCard work in a Workflows post"]
    if action["type"] == "Action.OpenUrl":
        url = action.get("url")
        if not isinstance(url, str) or not re.match(r"https?://", url):
            return [f"{at}: Action.OpenUrl needs an absolute url"]
        if not isinstance(action.get("title"), str):
            return [f"{at}: an action needs a title"]
    return []


def adaptive_card_problems(message: Any, raw_size: int) -> list[str]:
    if not isinstance(message, dict) or message.get("type") != "message":
        return ['the body must be {"type": "message", "attachments": [...]}']
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["no attachments"]
    problems = [] if raw_size <= 28 * 1024 else [f"message of {raw_size} bytes > 28 KB"]
    for n, attachment in enumerate(attachments):
        at = f"attachments[{n}]"
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append(f"{at}.contentType is not an Adaptive Card")
            continue
        card = attachment.get("content")
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            problems.append(f"{at}.content.type must be AdaptiveCard")
            continue
        if card.get("version") not in CARD_VERSIONS:
            problems.append(f"{at}.content.version {card.get('version')!r} unsupported")
        body = card.get("body")
        if not isinstance(body, list) or not body:
            problems.append(f"{at}.content.body is empty")
            continue
        problems += [p for i, e in enumerate(body)
                     for p in _element_problems(e, f"{at}.content.body[{i}]")]
        problems += [p for i, a in enumerate(card.get("actions", []))
                     for p in _action_problems(a, f"{at}.content.actions[{i}]")]
    return problems


@dataclass
class TeamsReceiver(Receiver):
    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        if delivery.headers.get("content-type") != "application/json":
            return ["Content-Type must be application/json"]
        return adaptive_card_problems(delivery.body, len(raw))

    def ok(self, delivery: Delivery) -> Answer:
        return 202, {}, b""

    def cards(self) -> list[dict[str, Any]]:
        return [d.body["attachments"][0]["content"] for d in self.accepted]

    def alerts_covered(self) -> int:
        """One per alert card, N per digest card ("N alerts (... digest)")."""
        total = 0
        for card in self.cards():
            title = card["body"][0]["text"]
            total += int(title.split()[0]) if "digest)" in title else 1
        return total


# ---------------------------------------------------------------- Opsgenie

OG_PRIORITIES = {"P1", "P2", "P3", "P4", "P5"}
OG_CREATE_FIELDS = {"message", "alias", "description", "responders", "visibleTo", "actions",
                    "tags", "details", "entity", "source", "priority", "user", "note"}
OG_LIMITS = {"message": 130, "alias": 512, "description": 15000, "entity": 512, "source": 100,
             "user": 100, "note": 25000}


def _string_limits(body: dict[str, Any], names: set[str]) -> list[str]:
    problems = []
    for name in names & set(body):
        value = body[name]
        if not isinstance(value, str) or len(value) > OG_LIMITS[name]:
            problems.append(f"{name} must be a string of at most {OG_LIMITS[name]} characters")
    return problems


def opsgenie_create_problems(body: Any) -> dict[str, str]:
    if not isinstance(body, dict):
        return {"body": "must be a JSON object"}
    errors: dict[str, str] = {f"{k}": "unknown field" for k in set(body) - OG_CREATE_FIELDS}
    if not isinstance(body.get("message"), str) or not body["message"].strip():
        errors["message"] = "Message can not be empty."
    for problem in _string_limits(body, {"message", "alias", "description", "entity", "source",
                                         "user", "note"}):
        errors[problem.split()[0]] = problem
    tags = body.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 20 or any(
            not isinstance(t, str) or len(t) > 50 for t in tags):
        errors["tags"] = "at most 20 tags of at most 50 characters"
    details = body.get("details", {})
    if not isinstance(details, dict) or any(not isinstance(v, str) for v in details.values()):
        errors["details"] = "a map of strings"
    elif sum(len(k) + len(v) for k, v in details.items()) > 8000:
        errors["details"] = "more than 8000 characters"
    if "priority" in body and body["priority"] not in OG_PRIORITIES:
        errors["priority"] = "one of P1..P5"
    for n, responder in enumerate(body.get("responders", [])):
        if not isinstance(responder, dict) or responder.get("type") not in {
                "team", "user", "escalation", "schedule"} or not (
                {"id", "name", "username"} & set(responder)):
            errors[f"responders[{n}]"] = "type and one of id, name, username"
    actions = body.get("actions", [])
    if len(actions) > 10 or any(not isinstance(a, str) or len(a) > 50 for a in actions):
        errors["actions"] = "at most 10 of at most 50 characters"
    return errors


@dataclass
class OpsgenieReceiver(Receiver):
    api_key: str = "0a1b2c3d-og-integration-key"
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: int = 0
    close_misses: int = 0

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        if delivery.headers.get("authorization") != f"GenieKey {self.api_key}":
            return ["unauthorized"]
        parts = urlsplit(delivery.path)
        if parts.path == "/v2/alerts":
            return [f"{k}: {v}" for k, v in opsgenie_create_problems(delivery.body).items()]
        match = re.fullmatch(r"/v2/alerts/([^/]+)/close", parts.path)
        if match is None:
            return ["not found"]
        kind = parse_qs(parts.query).get("identifierType", ["id"])[0]
        if kind not in {"id", "tiny", "alias"}:
            return ["identifierType: one of id, tiny, alias"]
        body = delivery.body if delivery.body is not None else {}
        if not isinstance(body, dict) or set(body) - {"user", "source", "note"}:
            return ["close takes user, source and note only"]
        return _string_limits(body, {"user", "source", "note"})

    def invalid(self, errors: list[str]) -> Answer:
        took = {"took": 0.001, "requestId": str(uuid.uuid4())}
        if errors == ["unauthorized"]:
            return 401, {}, {"message": "Could not authenticate", **took}
        if errors == ["not found"]:
            return 404, {}, {"message": "Not found", **took}
        return 422, {}, {"message": "Request body is not processable. Please check the errors.",
                         "errors": dict(e.split(": ", 1) if ": " in e else (e, e)
                                        for e in errors), **took}

    def ok(self, delivery: Delivery) -> Answer:
        parts = urlsplit(delivery.path)
        if parts.path == "/v2/alerts":
            alias = delivery.body.get("alias") or delivery.body["message"]
            alert = self.alerts.get(alias)
            if alert is None or alert["status"] == "closed":
                self.created += 1
                alert = self.alerts[alias] = {"status": "open", "count": 0, "creates": []}
            alert["count"] += 1
            alert["creates"].append(delivery.body)
        else:
            alias = unquote(parts.path.split("/")[3])
            alert = self.alerts.get(alias)
            if alert is None or alert["status"] == "closed":
                self.close_misses += 1          # Opsgenie answers 202 and fails later
            else:
                alert["status"] = "closed"
        return 202, {}, {"result": "Request will be processed", "took": 0.002,
                         "requestId": str(uuid.uuid4())}


# ---------------------------------------------------------------- Jira

ADF_MARKS = {"strong", "em", "code", "link", "strike", "underline"}


def adf_problems(node: Any, at: str = "doc") -> list[str]:
    """The subset of the Atlassian Document Format we may send."""
    if at == "doc":
        if not isinstance(node, dict) or node.get("type") != "doc" or node.get("version") != 1:
            return ['a document is {"type": "doc", "version": 1, "content": [...]}']
        return [p for i, child in enumerate(node.get("content", []))
                for p in adf_problems(child, f"doc.content[{i}]")]
    if not isinstance(node, dict):
        return [f"{at}: not a node"]
    kind, content = node.get("type"), node.get("content", [])
    if kind == "text":
        problems = [] if isinstance(node.get("text"), str) and node["text"] else [
            f"{at}: a text node needs non-empty text"]
        for mark in node.get("marks", []):
            if mark.get("type") not in ADF_MARKS:
                problems.append(f"{at}: unknown mark {mark.get('type')!r}")
            if mark.get("type") == "link" and not str(mark.get("attrs", {}).get("href", "")):
                problems.append(f"{at}: a link needs attrs.href")
        return problems
    allowed = {"paragraph": {"text"}, "heading": {"text"}, "codeBlock": {"text"},
               "bulletList": {"listItem"}, "listItem": {"paragraph", "bulletList", "codeBlock"}}
    if kind not in allowed:
        return [f"{at}: unknown node {kind!r}"]
    problems = []
    if kind == "heading" and node.get("attrs", {}).get("level") not in range(1, 7):
        problems.append(f"{at}: a heading needs attrs.level 1-6")
    if kind in {"bulletList", "listItem"} and not content:
        problems.append(f"{at}: {kind} needs content")
    for i, child in enumerate(content):
        if not isinstance(child, dict) or child.get("type") not in allowed[kind]:
            problems.append(f"{at}.content[{i}]: {child.get('type') if isinstance(child, dict) else child!r} not allowed in {kind}")
            continue
        problems += adf_problems(child, f"{at}.content[{i}]")
    return problems


def adf_text(node: Any) -> str:
    if isinstance(node, dict):
        return node.get("text", "") + "".join(adf_text(c) for c in node.get("content", []))
    return ""


JQL = re.compile(r'labels = "([\w-]+)" AND statusCategory != Done ORDER BY created DESC')
JIRA_FIELDS = {"project", "issuetype", "summary", "description", "labels", "priority"}
TRANSITIONS = {"11": ("To Do", "new"), "21": ("In Progress", "indeterminate"),
               "31": ("Done", "done")}


@dataclass
class JiraReceiver(Receiver):
    user: str = "ctrail@example.com"
    token: str = "ATATT3xFfGF0-jira-api-token"
    project: str = "SEC"
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    lose_creates: int = 0        # creates made whose answer is then lost (a 504 from a proxy)

    def _authorised(self, delivery: Delivery) -> bool:
        basic = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        return delivery.headers.get("authorization") == f"Basic {basic}"

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        if not self._authorised(delivery):
            return ["unauthorized"]
        path = urlsplit(delivery.path).path
        if path == "/rest/api/3/issue" and delivery.method == "POST":
            return self._create_problems(delivery.body)
        if path == "/rest/api/3/search/jql" and delivery.method == "GET":
            jql = parse_qs(urlsplit(delivery.path).query).get("jql", [""])[0]
            return [] if JQL.fullmatch(jql) else [f"jql: cannot parse {jql!r}"]
        match = re.fullmatch(r"/rest/api/3/issue/([A-Z]+-\d+)/(comment|transitions)", path)
        if match is None:
            return ["no such resource"]
        if match.group(1) not in self.issues:
            return ["issue does not exist"]
        if match.group(2) == "comment":
            body = delivery.body
            if delivery.method != "POST" or not isinstance(body, dict) or "body" not in body:
                return ["comment: body is required"]
            return adf_problems(body["body"])
        if delivery.method == "GET":
            return []
        chosen = (delivery.body or {}).get("transition", {}).get("id")
        return [] if chosen in TRANSITIONS else ["transition: not a valid transition id"]

    def _create_problems(self, body: Any) -> list[str]:
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return ["fields: required"]
        problems = [f"{k}: Field '{k}' cannot be set." for k in set(fields) - JIRA_FIELDS]
        if fields.get("project") != {"key": self.project}:
            problems.append("project: valid project is required")
        issuetype = fields.get("issuetype")
        if not isinstance(issuetype, dict) or not ({"name", "id"} & set(issuetype)):
            problems.append("issuetype: valid issue type is required")
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 255 or "\n" in summary:
            problems.append("summary: one line of at most 255 characters")
        if "description" in fields:
            problems += [f"description: {p}" for p in adf_problems(fields["description"])]
        for label in fields.get("labels", []):
            if not isinstance(label, str) or " " in label or len(label) > 255:
                problems.append("labels: a label cannot contain spaces")
        if "priority" in fields and not isinstance(fields["priority"].get("name"), str):
            problems.append("priority: name required")
        return problems

    def invalid(self, errors: list[str]) -> Answer:
        if errors == ["unauthorized"]:
            return 401, {}, b"Client must be authenticated to access this resource."
        if errors in (["issue does not exist"], ["no such resource"]):
            return 404, {}, {"errorMessages": ["Issue does not exist or you do not have "
                                               "permission to see it."], "errors": {}}
        return 400, {}, {"errorMessages": [], "errors": dict(
            e.split(": ", 1) if ": " in e else ("request", e) for e in errors)}

    def ok(self, delivery: Delivery) -> Answer:
        path = urlsplit(delivery.path).path
        if path == "/rest/api/3/search/jql":
            match = JQL.fullmatch(parse_qs(urlsplit(delivery.path).query)["jql"][0])
            assert match is not None
            found = [{"id": key, "key": key, "fields": {"status": {"name": i["status"]}}}
                     for key, i in reversed(self.issues.items())
                     if match.group(1) in i["fields"].get("labels", []) and i["status"] != "Done"]
            return 200, {}, {"issues": found[:1], "isLast": True}
        if path == "/rest/api/3/issue":
            number = len(self.issues) + 1
            key = f"{self.project}-{number}"
            self.issues[key] = {"fields": delivery.body["fields"], "status": "To Do",
                                "comments": []}
            if self.lose_creates:
                self.lose_creates -= 1
                return 504, {}, b"Gateway Timeout"
            return 201, {}, {"id": str(10000 + number), "key": key,
                             "self": f"{self.base}/rest/api/3/issue/{10000 + number}"}
        key, what = path.split("/")[5:7]
        issue = self.issues[key]
        if what == "comment":
            issue["comments"].append(delivery.body["body"])
            return 201, {}, {"id": str(len(issue["comments"])), "body": delivery.body["body"]}
        if delivery.method == "GET":
            return 200, {}, {"transitions": [
                {"id": tid, "name": name, "to": {"name": name, "statusCategory": {"key": cat}}}
                for tid, (name, cat) in TRANSITIONS.items() if name != issue["status"]]}
        issue["status"] = TRANSITIONS[delivery.body["transition"]["id"]][0]
        return 204, {}, b""

    def alerts_covered(self) -> int:
        """From the "Alerts: N (M occurrences)" fact of every issue and comment."""
        documents = [i["fields"]["description"] for i in self.issues.values()]
        documents += [c for i in self.issues.values() for c in i["comments"]]
        return sum(int(m.group(1)) for d in documents
                   for m in [re.search(r"Alerts: (\d+) \(", adf_text(d))] if m)
