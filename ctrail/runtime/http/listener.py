"""HttpListener: a Source whose records are request bodies, answered when durable."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from typing import TYPE_CHECKING, Any, Sequence

from ctrail.components import RawRecord
from ctrail.runtime.http.auth import certificate_names, presented_credential, token_matches
from ctrail.runtime.http.server import Refusal, Server, framing_error, handler_class

if TYPE_CHECKING:
    import ssl

    from ctrail.runtime.http.config import ListenerConfig

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    record: RawRecord
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 503


class HttpListener:
    """A Source whose records are request bodies; each request waits for its batch's commit."""

    def __init__(self, config: ListenerConfig, name: str, tokens: Sequence[bytes],
                 tls: ssl.SSLContext | None) -> None:
        self.config, self.name = config, name
        self._tokens = tuple(tokens)
        self._queue: queue.Queue[_Pending] = queue.Queue(config.max_queued_requests)
        self._in_flight: dict[str, _Pending] = {}
        self._failing_until = 0.0
        self._lock = threading.Lock()
        self.answered: Counter[int] = Counter()        # answers by status (tests, metrics)
        self.server = Server((config.host, config.port), handler_class(self), config, tls,
                             f"webhook-{name}")
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,),
                                        name=f"webhook-{name}", daemon=True)
        self._thread.start()
        log.info("Listening for webhooks.", extra={
            "source": name, "host": config.host, "port": self.port, "tls": tls is not None,
            "mutual_tls": config.client_ca_file is not None, "tokens": len(self._tokens)})

    @property
    def max_record_bytes(self) -> int:
        """The largest record this source yields: a body within its own limit."""
        return self.config.max_body_bytes

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def read(self, max_records: int) -> list[RawRecord]:
        if self._in_flight:
            # read() again without commit(): the collector failed that batch (the bus, most
            # likely). Its senders retry; new bodies are refused for a moment, not piled up.
            self._release(list(self._in_flight.values()), 503)
            self._in_flight.clear()
            self._failing_until = time.monotonic() + self.config.retry_after_secs
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
        self._release([p for r in records if (p := self._in_flight.pop(r.origin, None))], 200)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        waiting = list(self._in_flight.values())
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._release(waiting, 503)

    def refusal(self, authorization: str | None, cert: dict[str, Any] | None,
                headers: Message) -> Refusal | None:
        """Why this request is refused before its body is read, or None to read it."""
        if self._tokens and not token_matches(presented_credential(authorization), self._tokens):
            return 401, "unauthorized"
        if self.config.client_names and not certificate_names(cert) & set(self.config.client_names):
            return 403, "client certificate not allowed"
        if (framing := framing_error(headers, self.config.max_body_bytes)) is not None:
            return framing
        if time.monotonic() < self._failing_until:
            return 503, "the bus is unavailable"
        return (429, "intake queue full") if self._queue.full() else None

    def submit(self, body: bytes) -> tuple[int, str, str | None]:
        """Queue one body and wait until it is durable: (status, message, request id)."""
        request_id = str(uuid.uuid4())
        record = RawRecord(body, f"webhook {self.name} {request_id}", datetime.now(timezone.utc))
        pending = _Pending(record)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            return 429, "intake queue full", None
        if not pending.done.wait(self.config.ack_timeout_secs):
            return 503, "not yet durable", request_id
        if pending.status != 200:
            return 503, "the bus is unavailable", request_id
        return 200, "ok", request_id

    def count(self, status: int) -> None:
        with self._lock:
            self.answered[status] += 1

    @staticmethod
    def _release(pendings: Sequence[_Pending], status: int) -> None:
        for pending in pendings:
            pending.status = status
            pending.done.set()
