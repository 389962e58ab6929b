"""Receiver: any HTTPS endpoint, as signed JSON.

Each request is a POST with the body
    {"type": "alert", "delivery_id": "<receiver>:<alert id>", "alert": {...ECS alert...}}
or, when alerts arrive faster than `rate_per_sec` allows,
    {"type": "digest", "delivery_id": "<receiver>:digest:<first>-<last>", "count": N,
     "alerts": [{...}, ...]}
and the headers
    X-ContainerTrail-Timestamp: <unix seconds when sent>
    X-ContainerTrail-Signature: v1=<hex HMAC-SHA256(signing secret, timestamp + "." + body)>
    X-ContainerTrail-Delivery:  <delivery_id>

How a receiver verifies (what `verify_signature` does):
1. compute HMAC-SHA256 with the shared secret over the timestamp header, a ".", and the raw
   body bytes exactly as received (before any JSON parsing);
2. compare with the signature header in constant time (hmac.compare_digest);
3. refuse a timestamp more than 5 minutes from its own clock: a captured request cannot be
   replayed later;
4. drop a delivery_id it has already processed: a retry after a lost 2xx answer repeats one.
Answer 2xx when stored; 400/413/422 mean "never send this again"; anything else is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Callable, Final, Literal, Sequence

import orjson
from pydantic import Field, PositiveFloat, PositiveInt

from ctrail.bus.codec import encode
from ctrail.event import Alert
from ctrail.secrets import SecretRef
from sinks.notify.digest import digest_reason
from sinks.notify.message import (
    DigestReceiverBase,
    HttpNotifier,
    Message,
    Pending,
    Result,
    secret_value,
    send_json,
)

TIMESTAMP_HEADER: Final = "X-ContainerTrail-Timestamp"
SIGNATURE_HEADER: Final = "X-ContainerTrail-Signature"
DELIVERY_HEADER: Final = "X-ContainerTrail-Delivery"
TOLERANCE_SECS: Final = 300


class WebhookConfig(DigestReceiverBase):
    """A generic JSON receiver; `url` and `signing_secret` are both secrets (URLs carry tokens)."""

    type: Literal["webhook"] = "webhook"
    url: SecretRef
    signing_secret: SecretRef
    rate_per_sec: PositiveFloat = 10.0
    burst: PositiveInt = 20
    max_digest_alerts: PositiveInt = 100
    digest_min_alerts: PositiveInt = Field(
        50, description="A backlog at least this long, beyond the pace, goes as one digest.")

    def build(self, name: str, kibana_url: str | None) -> "WebhookNotifier":
        return WebhookNotifier(name, self)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str,
                     now: float | None = None, tolerance_secs: float = TOLERANCE_SECS) -> bool:
    """The receiver's check: a fresh timestamp, and a signature over it and the raw body."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_secs:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _doc(alert: Alert) -> dict[str, Any]:
    return orjson.loads(encode(alert))


def alert_body(receiver: str, alert: Alert) -> dict[str, Any]:
    return {"type": "alert", "delivery_id": f"{receiver}:{alert.event.id}", "alert": _doc(alert)}


def digest_body(receiver: str, alerts: Sequence[Alert], first_seq: int, last_seq: int
                ) -> dict[str, Any]:
    return {"type": "digest", "delivery_id": f"{receiver}:digest:{first_seq}-{last_seq}",
            "count": len(alerts), "alerts": [_doc(a) for a in alerts]}


class WebhookNotifier(HttpNotifier[WebhookConfig]):
    def __init__(self, name: str, config: WebhookConfig,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, config)
        self._url = secret_value(config.url)
        self._secret = secret_value(config.signing_secret)
        self.clock = clock          # the real time: the receiver checks it against its own

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        if digest_reason(batch, budget, self.config.digest_min_alerts) is not None:
            body = digest_body(self.name, [p.alert for p in batch], batch[0].seq, batch[-1].seq)
            return [Message(tuple(p.seq for p in batch), body, "digest", body["delivery_id"])]
        return [Message((p.seq,), alert_body(self.name, p.alert), "alert",
                        f"{self.name}:{p.alert.event.id}", p.alert.alert.group_key)
                for p in batch[:budget]]

    def post(self, message: Message) -> Result:
        body = orjson.dumps(message.body)
        # Signed when sent, not when planned: a retry an hour later carries a fresh timestamp.
        timestamp = str(int(self.clock()))
        headers = {TIMESTAMP_HEADER: timestamp, DELIVERY_HEADER: message.key,
                   SIGNATURE_HEADER: sign(self._secret.encode(), timestamp, body)}
        return send_json(self.client, self._url, body, headers)
