"""Source: the Fluent forward protocol (Fluent Bit's and Fluentd's `forward` output), over TCP or TLS.

Every carrier mode of Forward Protocol v1 is accepted (see forward_protocol.py). A message with
the `chunk` option is answered `{"ack": chunk}` only after all its entries (or their dead letters)
are durable on the bus, so a client that retries unacknowledged chunks loses nothing. The
shared-key handshake is required unless `allow_unauthenticated: true` says otherwise.

One connection is one thread holding at most `max_message_bytes` of unparsed input. A frame that
is not the protocol is dead-lettered (reason `undecodable`, origin with the peer and tag) and the
connection closed; an oversize frame is dead-lettered by its first bytes and closed too. Whatever
goes wrong in a connection stays in that connection.

Each entry becomes one RawRecord for the parser its tag selects (forward_records.py says how;
docs/sources/fluent-forward.md for users).
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

import msgpack
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from collector import PARSERS
from collector.sources import forward_protocol as fp
from collector.sources.forward_connection import Connection
from collector.sources.forward_records import entry_record
from ctrail.components import RawRecord
from ctrail.errors import ConfigError, InvalidInput, Reason
from ctrail.runtime.http.config import warn_if_exposed
from ctrail.runtime.http.limits import ClientLimits
from ctrail.secrets import SecretRef, resolve_secret

log = logging.getLogger(__name__)


class ForwardTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = Field(None, description="Require client certificates from it.")


class FluentForwardConfig(BaseModel):
    """Receive Fluent Bit / Fluentd `forward` output (msgpack over TCP, optionally TLS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fluent_forward"] = "fluent_forward"
    host: str = "127.0.0.1"
    port: int = Field(24224, ge=0, le=65535)
    parser: str = Field("container-log", description="Parser (a PARSERS name) for every entry; "
                        "route other formats to another listener (Fluent Bit `Match`).")
    path_key: str | None = Field(
        None, description="Record key holding the log file path (Fluent Bit tail Path_Key).")
    shared_key: SecretRef | None = None
    users: dict[str, SecretRef] = Field(default_factory=dict,
                                        description="Username -> password, checked in PING.")
    allow_unauthenticated: bool = Field(False, description="Accept clients without the handshake.")
    self_hostname: str | None = Field(None, description="Name in PONG; default: the host name.")
    tls: ForwardTls | None = None
    max_message_bytes: PositiveInt = 16 * 1024 * 1024
    max_decompressed_bytes: PositiveInt = 64 * 1024 * 1024
    max_connections: PositiveInt = 256
    max_connections_per_client: PositiveInt = Field(
        16, description="Open connections from one address; more are closed at once.")
    handshake_timeout_secs: PositiveFloat = Field(
        10.0, description="TLS and the shared-key handshake must be done within this; an idle "
                          "stranger holds a connection no longer.")
    max_queued_messages: PositiveInt = 64
    idle_timeout_secs: PositiveFloat = 300.0
    message_timeout_secs: PositiveFloat = Field(60.0, description="A started frame must be "
                                                "complete within this (slow clients).")
    ack_timeout_secs: PositiveFloat = 30.0

    @field_validator("parser")
    @classmethod
    def _known_parser(cls, name: str) -> str:
        if name not in PARSERS:
            raise ValueError(f"unknown parser {name!r}; one of {', '.join(PARSERS)}")
        return name

    @property
    def parser_name(self) -> str:
        return self.parser

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "ForwardSource":
        if self.shared_key is None and not self.allow_unauthenticated:
            raise ConfigError(f"sources.{name}: the forward input needs a shared_key ({{env: NAME}}"
                              " or {file: PATH}), or allow_unauthenticated: true")
        if self.users and self.shared_key is None:
            raise ConfigError(f"sources.{name}: users need the shared_key handshake")
        key = resolve_secret(self.shared_key).get_secret_value() if self.shared_key else None
        users = {user: resolve_secret(ref).get_secret_value() for user, ref in self.users.items()}
        tls = self._tls_context()
        warn_if_exposed(f"sources.{name}", self.host, tls is not None, self.allow_unauthenticated)
        return ForwardSource(self, name, key, users, tls)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            if self.tls.client_ca_file is not None:
                context.load_verify_locations(self.tls.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"forward tls: cannot load certificates: {exc}") from None
        return context


@dataclass
class _Batch:
    """One carrier message's records: done once every one is committed."""

    records: list[RawRecord]
    remaining: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class ForwardSource:
    def __init__(self, config: FluentForwardConfig, name: str, shared_key: str | None,
                 users: dict[str, str], tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.name = name
        self.shared_key = shared_key
        self.users = users
        self.tls = tls
        self.hostname = config.self_hostname or socket.gethostname()
        self.in_flight: dict[int, _Batch] = {}
        self._queue: queue.Queue[_Batch] = queue.Queue(config.max_queued_messages)
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._clients = ClientLimits(config.max_connections_per_client)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._listener = socket.create_server((config.host, config.port), backlog=128)
        self._listener.settimeout(0.5)      # so close() is noticed without a wake-up trick
        self._thread = threading.Thread(target=self._serve, name=f"forward-{name}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def read(self, max_records: int) -> list[RawRecord]:
        # Records handed out before and never committed belong to a failed collect: their
        # clients get no ack and send them again, so they are forgotten here.
        self.in_flight.clear()
        records: list[RawRecord] = []
        timeout: float | None = 0.5
        while len(records) < max_records:
            try:
                batch = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                break
            timeout = None
            for record in batch.records:
                self.in_flight[id(record)] = batch
            records.extend(batch.records)
        return records

    def commit(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            batch = self.in_flight.pop(id(record), None)
            if batch is not None:
                batch.remaining -= 1
                if batch.remaining == 0:
                    batch.done.set()

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for sock in self._connections:
                _shutdown(sock)

    def submit(self, records: list[RawRecord]) -> _Batch | None:
        """Queue one message's records; None when the intake stayed full (the client retries)."""
        batch = _Batch(records, len(records))
        if not records:
            batch.done.set()
            return batch
        try:
            self._queue.put(batch, timeout=self.config.ack_timeout_secs)
        except queue.Full:
            return None
        return batch

    def message_records(self, message: fp.Message) -> list[RawRecord]:
        received = datetime.now(timezone.utc)
        records = []
        for when, record in message.entries:
            try:
                records.append(entry_record(self.name, message.tag, when, record,
                                            self.config.parser, self.config.path_key, received))
            except (ValueError, OverflowError) as exc:
                # An entry no parser can place in time (past year 9999): a dead letter of its
                # own; the message's other entries are kept and its chunk is acked.
                records.append(RawRecord(
                    _packed(when, record), f"fluent_forward {self.name} tag={message.tag}",
                    received, rejected=InvalidInput(
                        Reason.INVALID_TIMESTAMP, f"entry time {when} ns: {exc}")))
        return records

    def dead_letter(self, raw: bytes, peer: str, tag: str | None, reason: Reason,
                    detail: str) -> None:
        # The peer's address without its port: a client re-sending the same bad frame from a
        # new connection makes the same dead letter (same id), not one per attempt.
        origin = f"fluent_forward {self.name} {peer} tag={tag or '-'}"
        log.warning("Dead-lettered a forward frame; closing the connection.",
                    extra={"source": self.name, "peer": peer, "tag": tag, "reason": reason.value})
        # Marked as judged: intake dead-letters it as the parse step would have.
        self.submit([RawRecord(raw, origin, datetime.now(timezone.utc),
                               rejected=InvalidInput(reason, detail))])

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                time.sleep(0.1)         # e.g. out of file descriptors: do not spin
                continue
            if not self._clients.connect(str(address[0])):
                log.warning("Refused a forward connection: too many open from its address.",
                            extra={"source": self.name, "peer": address[0]})
                sock.close()
                continue
            if not self._slots.acquire(blocking=False):
                self._clients.disconnect(str(address[0]))
                log.warning("Refused a forward connection: too many open.",
                            extra={"source": self.name, "peer": address[0]})
                sock.close()
                continue
            threading.Thread(target=self._connection, args=(sock, str(address[0])),
                             daemon=True, name=f"forward-{self.name}-conn").start()

    def _connection(self, sock: socket.socket, peer: str) -> None:
        with self._lock:
            self._connections.add(sock)
        try:
            Connection(self, sock, peer).run()
        except Exception:
            log.exception("A forward connection failed.", extra={"source": self.name,
                                                                 "peer": peer})
        finally:
            with self._lock:
                self._connections.discard(sock)
            _shutdown(sock)
            self._slots.release()
            self._clients.disconnect(peer)


def _packed(time_ns: int, record: dict[Any, Any]) -> bytes:
    """An entry as msgpack [time, record], for its dead letter (it was msgpack when it came)."""
    try:
        return bytes(msgpack.packb([time_ns, record], use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return repr([time_ns, record]).encode()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
