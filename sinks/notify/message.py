"""What every receiver shares: the Notifier protocol and base classes, HTTP outcome
classification, secrets and redaction.

A receiver (Slack, PagerDuty, webhook) is two halves, as STYLE.md's functional core asks:
`messages()` plans the requests for a batch of pending rows (pure), and `post()` sends one
request and classifies its answer (I/O, nothing else). The sender loop owns retries, rate
limits and the outbox; a receiver never touches them.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Callable, Final, Generic, Mapping, Protocol, Sequence, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.event import Alert
from ctrail.secrets import SecretRef, resolve_secret


class Outcome(StrEnum):
    DELIVERED = "delivered"     # 2xx: mark the rows delivered
    RETRY = "retry"             # later, with backoff (429, 5xx, network, receiver misconfigured)
    REJECTED = "rejected"       # this message can never succeed (400, 413, 422): keep, mark, say why


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    status: int | None = None
    retry_after_secs: float | None = None
    detail: str = ""            # redacted; stored in the outbox and logged
    reference: str = ""         # what the receiver named what it created (a Jira issue key)


@dataclass(frozen=True, slots=True)
class Pending:
    """One outbox row waiting for its receiver."""

    seq: int
    alert: Alert
    digest: bool = False        # released after quiet hours: goes out in a digest
    incident: str | None = None  # the receiver's open incident for the alert's group, if any
                                 # (PagerDuty dedup key, Opsgenie alias, Jira issue key)


@dataclass(frozen=True, slots=True)
class Message:
    """One request a receiver will make, and the outbox rows it covers."""

    seqs: tuple[int, ...]
    body: dict[str, Any]
    kind: str = "alert"         # alert | digest | trigger | comment | resolve | report
    key: str = ""               # idempotency key (webhook), dedup_key (PagerDuty)
    group_key: str | None = None


class Notifier(Protocol):
    name: str
    rate_per_sec: float
    burst: int

    def messages(self, batch: Sequence[Pending], budget: int) -> list[Message]:
        """Plan at most `budget` (>= 1) requests covering a prefix of `batch` (in order). Pure."""

    def post(self, message: Message) -> Result:
        """Send one request; never raises for HTTP or network failures, classifies them."""

    def close(self) -> None: ...


class ReceiverBase(BaseModel):
    """What every receiver's config has: its pace and its patience."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_per_sec: PositiveFloat = Field(1.0, description="Sustained requests per second.")
    burst: PositiveInt = Field(3, description="Requests allowed at once before pacing starts.")
    timeout_secs: PositiveFloat = 10.0
    max_digest_alerts: PositiveInt = Field(
        1000, description="The most alerts one digest (or one batch of rows) covers.")


class DigestReceiverBase(ReceiverBase):
    """A receiver that sends a backlog beyond its pace as one digest (Slack, Teams, email,
    webhook)."""

    digest_min_alerts: PositiveInt = Field(
        10, description="A backlog at least this long, beyond the pace, goes as one digest.")


ConfigT = TypeVar("ConfigT", bound=ReceiverBase)


class NotifierBase(Generic[ConfigT]):
    """What every receiver keeps from its config: its name, pace and the Kibana URL."""

    def __init__(self, name: str, config: ConfigT, kibana_url: str | None = None) -> None:
        self.name = name
        self.config = config
        self.rate_per_sec, self.burst = config.rate_per_sec, config.burst
        self.max_digest_alerts = config.max_digest_alerts
        self.kibana_url = kibana_url

    def close(self) -> None:
        pass


class HttpNotifier(NotifierBase[ConfigT]):
    """A receiver reached over HTTP: one client, with the config's timeout."""

    def __init__(self, name: str, config: ConfigT, kibana_url: str | None = None) -> None:
        super().__init__(name, config, kibana_url)
        self.client = httpx.Client(timeout=config.timeout_secs)

    def close(self) -> None:
        self.client.close()


def one_per_alert(batch: Sequence[Pending], budget: int,
                  body: Callable[[Alert], dict[str, Any]]) -> list[Message]:
    """One message per pending alert, keyed by the alert's id, at most `budget` of them."""
    return [Message((p.seq,), body(p.alert), "alert", p.alert.event.id, p.alert.alert.group_key)
            for p in batch[:budget]]


def by_group(batch: Sequence[Pending], budget: int) -> list[tuple[str, list[Pending]]]:
    """The pending rows by alert group (first come, first listed), at most `budget` groups: one
    request per group for receivers that keep one incident per group."""
    groups: dict[str, list[Pending]] = {}
    for pending in batch:
        groups.setdefault(pending.alert.alert.group_key, []).append(pending)
    return list(groups.items())[:budget]


# Which non-2xx answers mean "this message is bad" rather than "try later". Everything else
# (401/403/404: a revoked webhook or token; 429; 5xx) is retried, with the breaker opening, so
# alerts wait in the outbox while someone fixes the receiver instead of being thrown away.
REJECTED_STATUS: Final = frozenset({400, 413, 422})


def classify(status: int, headers: Mapping[str, str] | None = None, detail: str = "") -> Result:
    if 200 <= status < 300:
        return Result(Outcome.DELIVERED, status)
    if status in REJECTED_STATUS:
        return Result(Outcome.REJECTED, status, detail=redact(detail))
    retry_after = parse_retry_after((headers or {}).get("retry-after"))
    return Result(Outcome.RETRY, status, retry_after, redact(detail))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def send_json(client: httpx.Client, url: str, body: bytes | dict[str, Any],
              headers: Mapping[str, str] | None = None,
              explain: Callable[[httpx.Response], str] = lambda r: r.text[:200]) -> Result:
    """POST and classify the answer; `explain` says what went wrong from a non-2xx answer
    (the API's own reasons where it lists them)."""
    response, error = post_json(client, url, body, headers)
    if response is None:
        return Result(Outcome.RETRY, detail=error)
    return classify(response.status_code, response.headers, explain(response))


def post_json(client: httpx.Client, url: str, body: bytes | dict[str, Any],
              headers: Mapping[str, str] | None = None) -> tuple[httpx.Response | None, str]:
    """POST; (response, "") or (None, redacted error) on a network failure."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        response = client.post(url, content=content,
                               headers={"Content-Type": "application/json", **(headers or {})})
        response.read()
        return response, ""
    except httpx.HTTPError as exc:
        return None, redact(f"{type(exc).__name__}: {exc}")


# Secret redaction. Secret values (webhook URLs, tokens, routing keys) are registered when a
# receiver is built; every detail we store or log passes through redact(), and a filter on
# httpx's own loggers (which log each request's full URL at INFO) does the same for them.
_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_URL_PATH = re.compile(r"(https?://[^/\s\"']+)/[^\s\"']*")
REDACTED: Final = "[redacted]"


def register_secret(value: str) -> None:
    if value:
        with _LOCK:
            _SECRETS.add(value)


def secret_value(ref: SecretRef) -> str:
    """The secret's value, registered for redaction before any request can carry it."""
    value = resolve_secret(ref).get_secret_value()
    register_secret(value)
    return value


def redact(text: str) -> str:
    """The text without registered secrets, and with the path of any URL dropped."""
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _URL_PATH.sub(lambda m: f"{m.group(1)}/{REDACTED}", text)


def redact_url(url: str) -> str:
    return _URL_PATH.sub(lambda m: f"{m.group(1)}/{REDACTED}", url)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_log_redaction() -> None:
    """Idempotent: redact what httpx and httpcore log (request lines carry the URL)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
