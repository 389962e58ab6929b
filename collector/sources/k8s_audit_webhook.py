"""Source: kube-apiserver's audit webhook backend (POSTs of an audit.k8s.io EventList).

A request is answered only after its events (or its dead letter) are durable on the bus: 200
then, 503 if that takes longer than `ack_timeout_secs` (the API server retries the batch). The
endpoint needs a bearer token by default, compared in constant time; a body larger than
`max_body_bytes` gets 413, and a full intake queue gets 429 with Retry-After instead of
buffering without bound.
"""

from __future__ import annotations

import hmac
import queue
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SecretStr

from ctrail.components import RawRecord
from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef, resolve_secret


class K8sAuditWebhookConfig(BaseModel):
    """Receive the API server's audit webhook (--audit-webhook-config-file points here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["k8s_audit_webhook"] = "k8s_audit_webhook"
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token the API server presents.")
    allow_unauthenticated: bool = Field(
        False, description="Accept requests without a token (only behind a trusted proxy).")
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    max_queued_requests: PositiveInt = 64
    ack_timeout_secs: PositiveFloat = 30.0

    @property
    def parser_name(self) -> str:
        return "k8s-audit"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "WebhookSource":
        if self.token is None and not self.allow_unauthenticated:
            raise ConfigError(f"sources.{name}: the webhook needs a token ({{env: NAME}} or "
                              "{file: PATH}), or allow_unauthenticated: true")
        token = resolve_secret(self.token) if self.token is not None else None
        return WebhookSource(self, name, token)


@dataclass
class _Pending:
    record: RawRecord
    done: threading.Event = field(default_factory=threading.Event)


class WebhookSource:
    def __init__(self, config: K8sAuditWebhookConfig, name: str, token: SecretStr | None) -> None:
        self.config = config
        self.name = name
        self._token = token.get_secret_value().encode() if token is not None else None
        self._queue: queue.Queue[_Pending] = queue.Queue(config.max_queued_requests)
        self._in_flight: dict[str, _Pending] = {}
        self.server = ThreadingHTTPServer((config.host, config.port), self._handler_class())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name=f"webhook-{name}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def read(self, max_records: int) -> list[RawRecord]:
        batch: list[RawRecord] = []
        try:
            pending = self._queue.get(timeout=0.5)
        except queue.Empty:
            return batch
        while True:
            self._in_flight[pending.record.origin] = pending
            batch.append(pending.record)
            if len(batch) >= max_records:
                return batch
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return batch

    def commit(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            pending = self._in_flight.pop(record.origin, None)
            if pending is not None:
                pending.done.set()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        presented = (header or "").removeprefix("Bearer ").encode()
        return hmac.compare_digest(presented, self._token)

    def submit(self, body: bytes) -> tuple[int, str]:
        """Queue one request body and wait until it is durable; the HTTP status to answer."""
        record = RawRecord(body, f"webhook {self.name} {uuid.uuid4()}", datetime.now(timezone.utc))
        pending = _Pending(record)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            return 429, "intake queue full"
        if pending.done.wait(self.config.ack_timeout_secs):
            return 200, "ok"
        return 503, "not yet durable"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30           # a slow client cannot hold a thread forever
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                if not source.authorized(self.headers.get("Authorization")):
                    return self._answer(401, "unauthorized")
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    return self._answer(411, "Content-Length required")
                if int(length) > source.config.max_body_bytes:
                    return self._answer(413, "body too large")
                body = self.rfile.read(int(length))
                self._answer(*source.submit(body))

            def _answer(self, status: int, message: str) -> None:
                payload = f'{{"status": {status}, "message": "{message}"}}'.encode()
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Silenced: request lines would go to stderr, unstructured."""

        return Handler
