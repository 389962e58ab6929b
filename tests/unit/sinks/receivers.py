"""Local HTTP receivers that check every request against the documented shape of the real API
and answer as the real API does. Tests inject faults (500, 429 + Retry-After) by time.

- Slack: incoming webhook (POST /services/..., 200 "ok") and chat.postMessage (POST
  /api/chat.postMessage, bearer token, 200 {"ok": true} / {"ok": false, "error": ...}); Block
  Kit limits: 50 blocks; header plain_text <= 150; section text <= 3000, fields <= 10 of <= 2000,
  text or fields required; context <= 10 elements; actions <= 25 elements, button text
  plain_text <= 75, url <= 3000; block_id / action_id <= 255 and unique.
- PagerDuty Events API v2 (POST /v2/enqueue): routing_key; event_action trigger | acknowledge |
  resolve; dedup_key <= 255 (required unless trigger); trigger payload summary (<= 1024),
  source, severity in critical | error | warning | info; optional timestamp, component, group,
  class (strings), custom_details (object); links [{href, text?}], images [{src (https)...}].
  202 {"status": "success", "message": "Event processed", "dedup_key": ...};
  400 {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}.
- Webhook: HMAC signature and timestamp checked with sinks.webhook.verify_signature.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson

from ctrail.event import (
    Alert,
    AlertInfo,
    Container,
    ContainerImage,
    EventInfo,
    ImageHash,
    Kubernetes,
    KubernetesPod,
    Orchestrator,
    OrchestratorCluster,
    Rule,
    Severity,
    User,
)
from sinks.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

Fault = Callable[[float], tuple[int, dict[str, str]] | None]
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def make_alert(i: int, rule: str = "CT-K8S-004", pod: str = "web-1", namespace: str = "shop",
               severity: str = "medium", user: str = "alice@example.com",
               cluster: str | None = "prod-eu", count: int = 1) -> Alert:
    sev = Severity.from_word(severity)
    return Alert(
        timestamp=T0 + timedelta(seconds=i),
        event=EventInfo(id=f"alert-{i:06d}", kind="alert", action=rule,
                        dataset="containertrail.alerts", module="containertrail",
                        original="{}", ingested=T0, severity=int(sev)),
        rule=Rule(id=rule, name=f"Rule {rule}", description="Someone opened a shell in a pod."),
        alert=AlertInfo(severity=sev.word, group_key=f"{rule}|{user}|{namespace}/{pod}",
                        count=count, event_ids=(f"ev-{i}",)),
        user=User(name=user),
        container=Container(id="3f2a" + f"{i:060d}", name="web", image=ContainerImage(
            name="registry.example.com/shop/web", tag=("1.4.2",),
            hash=ImageHash(all=("sha256:" + "ab" * 32,)))),
        orchestrator=Orchestrator(namespace=namespace,
                                  cluster=OrchestratorCluster(name=cluster) if cluster else None),
        kubernetes=Kubernetes(namespace=namespace, pod=KubernetesPod(name=pod)))


@dataclass
class Delivery:
    at: float
    path: str
    headers: dict[str, str]
    body: Any
    method: str = "POST"


@dataclass
class Receiver:
    clock: Callable[[], float] = time.time
    fault: Fault | None = None
    accepted: list[Delivery] = field(default_factory=list)
    refused: list[Delivery] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                self.do_POST("GET")

            def do_POST(self, method: str = "POST") -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, body = receiver.answer(self.path, dict(self.headers), raw,
                                                        method)
                payload = body if isinstance(body, bytes) else orjson.dumps(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.lock = threading.Lock()
        self.handler = Handler
        self.listen(0)

    def listen(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def restart(self) -> None:
        """Back on the same port after close(): a receiver that was down (refusing
        connections) and returns, keeping what it received before."""
        self.listen(self.server.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, headers: dict[str, str], raw: bytes, method: str = "POST"
               ) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        now = self.clock()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        delivery = Delivery(now, path, {k.lower(): v for k, v in headers.items()}, body, method)
        fault = self.fault(now) if self.fault else None
        with self.lock:
            if fault is not None:
                self.refused.append(delivery)
                return fault[0], fault[1], self.fault_body(fault[0])
            errors = self.validate(delivery, raw)
            if errors:
                self.problems.extend(errors)
                self.refused.append(delivery)
                return self.invalid(errors)
            self.accepted.append(delivery)
            return self.ok(delivery)

    def fault_body(self, status: int) -> bytes | dict[str, Any]:
        return b"rate limited" if status == 429 else b"server error"

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        return []

    def invalid(self, errors: list[str]) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        return 400, {}, b"invalid_payload"

    def ok(self, delivery: Delivery) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        return 200, {}, b"ok"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _text_problems(obj: Any, where: str, limit: int, kinds: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where}: a text object of type {'/'.join(kinds)} expected"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    return [f"{where}: {len(text)} characters > {limit}"] if len(text) > limit else []


def block_kit_problems(message: Any) -> list[str]:
    """Block Kit rules for a message payload (the subset of block types we may send)."""
    if not isinstance(message, dict):
        return ["the body is not a JSON object"]
    blocks = message.get("blocks", [])
    if not message.get("text") and not blocks:
        return ["no text and no blocks"]
    problems = [] if len(blocks) <= 50 else [f"{len(blocks)} blocks > 50"]
    ids: set[str] = set()
    for n, block in enumerate(blocks):
        kind, at = block.get("type"), f"blocks[{n}]"
        for key in ("block_id", "action_id"):
            if key in block and (len(block[key]) > 255 or block[key] in ids):
                problems.append(f"{at}.{key} too long or repeated")
            ids.add(block.get(key, f"-{n}"))
        if kind == "header":
            problems += _text_problems(block.get("text"), at, 150, ("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{at}: a section needs text or fields")
            if "text" in block:
                problems += _text_problems(block["text"], at, 3000, ("plain_text", "mrkdwn"))
            fields = block.get("fields", [])
            if len(fields) > 10:
                problems.append(f"{at}: {len(fields)} fields > 10")
            for f_n, f in enumerate(fields):
                problems += _text_problems(f, f"{at}.fields[{f_n}]", 2000, ("plain_text", "mrkdwn"))
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 10:
                problems.append(f"{at}: 1 to 10 context elements")
            for e_n, e in enumerate(elements):
                problems += _text_problems(e, f"{at}.elements[{e_n}]", 3000, ("plain_text", "mrkdwn"))
        elif kind == "actions":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 25:
                problems.append(f"{at}: 1 to 25 action elements")
            for e in elements:
                if e.get("type") != "button":
                    problems.append(f"{at}: only buttons are sent")
                    continue
                problems += _text_problems(e.get("text"), f"{at} button", 75, ("plain_text",))
                if len(e.get("url", "")) > 3000 or len(e.get("action_id", "")) > 255:
                    problems.append(f"{at}: button url or action_id too long")
                if e.get("action_id") in ids:
                    problems.append(f"{at}: repeated action_id")
                ids.add(e.get("action_id", ""))
        elif kind != "divider":
            problems.append(f"{at}: unexpected block type {kind!r}")
    return problems


@dataclass
class SlackReceiver(Receiver):
    token: str = "xoxb-test-token"

    def fault_body(self, status: int) -> bytes | dict[str, Any]:
        return {"ok": False, "error": "ratelimited"} if status == 429 else b"server error"

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        if delivery.path == "/api/chat.postMessage":
            problems = []
            if delivery.headers.get("authorization") != f"Bearer {self.token}":
                problems.append("invalid_auth")
            if not isinstance(delivery.body, dict) or not delivery.body.get("channel"):
                problems.append("channel_not_found")
            return problems or block_kit_problems(delivery.body)
        return block_kit_problems(delivery.body)

    def invalid(self, errors: list[str]) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        if "invalid_auth" in errors or "channel_not_found" in errors:
            return 200, {}, {"ok": False, "error": errors[0]}
        if self.refused and self.refused[-1].path == "/api/chat.postMessage":
            return 200, {}, {"ok": False, "error": "invalid_blocks"}
        return 400, {}, b"invalid_blocks"

    def ok(self, delivery: Delivery) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        if delivery.path == "/api/chat.postMessage":
            return 200, {}, {"ok": True, "channel": delivery.body["channel"],
                             "ts": f"{delivery.at:.6f}"}
        return 200, {"Content-Type": "text/plain"}, b"ok"

    def alerts_covered(self) -> int:
        """Alerts in accepted messages: one per alert message, N per digest ("N alerts (...")."""
        total = 0
        for d in self.accepted:
            header = d.body["blocks"][0]["text"]["text"]
            total += int(header.split()[0]) if "digest" in header else 1
        return total


PD_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class PagerDutyReceiver(Receiver):
    routing_key: str = "R0UT1NGKEY0123456789ABCDEFGHIJKL"          # 32 characters
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: int = 0

    def fault_body(self, status: int) -> bytes | dict[str, Any]:
        return ({"status": "throttle event", "message": "Requests for this service are arriving "
                 "too quickly. Please retry later."} if status == 429 else b"server error")

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        e, problems = delivery.body, []
        if not isinstance(e, dict):
            return ["Event object is invalid"]
        if e.get("routing_key") != self.routing_key:
            problems.append("'routing_key' is invalid")
        action = e.get("event_action")
        if action not in {"trigger", "acknowledge", "resolve"}:
            problems.append("'event_action' is invalid")
        key = e.get("dedup_key")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            problems.append("'dedup_key' must be a string of at most 255 characters")
        if action != "trigger" and not key:
            problems.append("'dedup_key' is required")
        if action == "trigger":
            p = e.get("payload")
            if not isinstance(p, dict):
                return [*problems, "'payload' is missing or invalid"]
            if not isinstance(p.get("summary"), str) or not 0 < len(p["summary"]) <= 1024:
                problems.append("'payload.summary' is invalid")
            if not isinstance(p.get("source"), str) or not p["source"]:
                problems.append("'payload.source' is missing")
            if p.get("severity") not in PD_SEVERITIES:
                problems.append("'payload.severity' is invalid")
            for name in ("timestamp", "component", "group", "class"):
                if name in p and not isinstance(p[name], str):
                    problems.append(f"'payload.{name}' must be a string")
            if "timestamp" in p:
                try:
                    datetime.fromisoformat(p["timestamp"])
                except ValueError:
                    problems.append("'payload.timestamp' is not ISO 8601")
            if "custom_details" in p and not isinstance(p["custom_details"], dict):
                problems.append("'payload.custom_details' must be an object")
            for link in e.get("links", []):
                if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                    problems.append("'links' entries need href")
            for image in e.get("images", []):
                if not str(image.get("src", "")).startswith("https://"):
                    problems.append("'images' src must be https")
        if len(raw) > 512 * 1024:
            problems.append("payload larger than 512 KB")
        return problems

    def invalid(self, errors: list[str]) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        return 400, {}, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": errors}

    def ok(self, delivery: Delivery) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        e = delivery.body
        key = e["dedup_key"]
        incident = self.incidents.get(key)
        if e["event_action"] == "trigger":
            if incident is None or incident["state"] == "resolved":
                self.created += 1
                incident = self.incidents[key] = {"state": "triggered", "triggers": 0,
                                                  "number": self.created}
            incident["triggers"] += 1
        elif incident is not None and incident["state"] != "resolved":
            incident["state"] = "resolved" if e["event_action"] == "resolve" else "acknowledged"
        return 202, {}, {"status": "success", "message": "Event processed", "dedup_key": key}


@dataclass
class WebhookReceiver(Receiver):
    secret: bytes = b"whsec-test-secret"
    delivery_ids: list[str] = field(default_factory=list)

    def validate(self, delivery: Delivery, raw: bytes) -> list[str]:
        h = delivery.headers
        if not verify_signature(self.secret, h.get(TIMESTAMP_HEADER.lower(), ""), raw,
                                h.get(SIGNATURE_HEADER.lower(), "")):
            return ["bad signature or stale timestamp"]
        if not h.get(DELIVERY_HEADER.lower()):
            return ["no delivery id"]
        return []

    def ok(self, delivery: Delivery) -> tuple[int, dict[str, str], bytes | dict[str, Any]]:
        self.delivery_ids.append(delivery.headers[DELIVERY_HEADER.lower()])
        return 200, {}, b"{}"

    def alert_ids(self) -> list[str]:
        ids: list[str] = []
        for d in self.accepted:
            alerts = [d.body["alert"]] if d.body["type"] == "alert" else d.body["alerts"]
            ids += [a["event"]["id"] for a in alerts]
        return ids
