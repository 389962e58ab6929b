"""One forward-protocol client connection: optional TLS, the handshake, frames, acks.

A connection holds at most `max_message_bytes` of unparsed input (its own copy, so a bad frame
can be dead-lettered byte for byte), waits `idle_timeout_secs` for a frame to start and
`message_timeout_secs` for a started one to finish; any breach closes it. It answers an ack only
after the source reports the message's records committed.

Until the client has passed the handshake it has proved nothing, so it costs little: TLS and the
handshake must be done within `handshake_timeout_secs`, its PING may be HANDSHAKE_MAX_BYTES at
most, and what it sends is refused (the connection closed), not dead-lettered.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

import msgpack

from collector.sources import forward_protocol as fp
from ctrail.errors import Reason

if TYPE_CHECKING:
    from collector.sources.fluent_forward import ForwardSource

log = logging.getLogger(__name__)
RECV_BYTES = 64 * 1024
EVIDENCE_BYTES = 64 * 1024      # of an oversize frame, its start is kept as evidence
HANDSHAKE_MAX_BYTES = 64 * 1024  # a PING is a few hundred bytes


class Closed(Exception):
    """The connection ends: the peer left, a timeout, or a refusal already answered."""


class Connection:
    def __init__(self, source: ForwardSource, sock: socket.socket, peer: str) -> None:
        self.source = source
        self.config = source.config
        self.sock = sock
        self.peer = peer
        self.buffer = bytearray()       # received, not yet returned as a frame
        self.consumed = 0               # stream offset of buffer[0]
        self.unpacker = fp.unpacker(self.config.max_message_bytes + RECV_BYTES)
        self.limit = self.config.max_message_bytes
        self.handshake_until: float | None = None      # set while the client is a stranger

    def run(self) -> None:
        try:
            self.handshake_until = time.monotonic() + self.config.handshake_timeout_secs
            if self.source.tls is not None:
                self.sock.settimeout(self.config.handshake_timeout_secs)
                self.sock = self.source.tls.wrap_socket(self.sock, server_side=True)
            if self.source.shared_key is not None:
                self.limit = HANDSHAKE_MAX_BYTES
                if not self._handshake():
                    return
            self.limit, self.handshake_until = self.config.max_message_bytes, None
            while (frame := self.next_frame()) is not None:
                if not self._handle(*frame):
                    return
        except (Closed, ssl.SSLError, OSError) as exc:
            log.debug("Closed a forward connection.", extra={"peer": self.peer,
                                                               "why": str(exc)})

    def _handshake(self) -> bool:
        nonce = os.urandom(16)
        auth_salt = os.urandom(16) if self.source.users else b""
        self.sock.sendall(fp.helo(nonce, auth_salt))
        frame = self.next_frame()
        if frame is None:
            return False
        assert self.source.shared_key is not None
        ok, reason, salt = fp.check_ping(frame[0], nonce, auth_salt, self.source.shared_key,
                                         self.source.users)
        self.sock.sendall(fp.pong(ok, reason, salt, nonce, self.source.hostname,
                                  self.source.shared_key))
        if not ok:
            log.warning("Refused a forward client.", extra={
                "source": self.source.name, "peer": self.peer, "reason": reason})
        return ok

    def _handle(self, frame: Any, raw: bytes) -> bool:
        """Queue one message (and ack it when asked); False closes the connection."""
        try:
            message = fp.decode_message(frame, self.config.max_decompressed_bytes)
        except fp.ProtocolError as exc:
            reason = Reason.RECORD_TOO_LARGE if exc.oversize else Reason.UNDECODABLE
            self.source.dead_letter(raw, self.peer, exc.tag, reason, exc.detail)
            return False
        batch = self.source.submit(self.source.message_records(message))
        if batch is None:
            log.warning("Closed a forward connection: the intake queue stayed full.",
                        extra={"source": self.source.name, "peer": self.peer})
            return False
        if message.chunk is None:
            return True
        if not batch.done.wait(self.config.ack_timeout_secs):
            log.warning("Closed a forward connection: a chunk was not durable in time.",
                        extra={"source": self.source.name, "peer": self.peer})
            return False
        self.sock.sendall(fp.ack(message.chunk))
        return True

    def next_frame(self) -> tuple[Any, bytes] | None:
        """The next decoded frame and its bytes; None when the peer closed between frames.

        A frame that is not msgpack, or too large, is dead-lettered here; then Closed."""
        started = time.monotonic()
        while True:
            try:
                frame = self.unpacker.unpack()
            except msgpack.OutOfData:
                pass
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # TypeError: a map whose key is an array or a map (valid msgpack, no dict key)
                self._reject(Reason.UNDECODABLE, f"not msgpack: {exc}", bytes(self.buffer))
            else:
                end = self.unpacker.tell() - self.consumed
                raw = bytes(self.buffer[:end])
                del self.buffer[:end]
                self.consumed += end
                return frame, raw
            if not self.buffer:
                started = time.monotonic()      # idle between frames: the idle limit applies
            data = self._receive(started)
            if not data:
                if self.buffer:
                    raise Closed("the peer closed the connection inside a frame")
                return None
            if len(self.buffer) + len(data) > self.limit:
                self._reject(Reason.RECORD_TOO_LARGE,
                             f"frame exceeds max_message_bytes ({self.limit})",
                             bytes((self.buffer + data)[:EVIDENCE_BYTES]))
            self.buffer += data
            self.unpacker.feed(data)

    def _receive(self, started: float) -> bytes:
        wait = self.config.idle_timeout_secs
        if self.buffer:
            left = self.config.message_timeout_secs - (time.monotonic() - started)
            if left <= 0:
                raise Closed("a frame took longer than message_timeout_secs")
            wait = min(left, wait)
        if self.handshake_until is not None:
            left = self.handshake_until - time.monotonic()
            if left <= 0:
                raise Closed("no handshake within handshake_timeout_secs")
            wait = min(left, wait)
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(RECV_BYTES)
        except TimeoutError:
            raise Closed("timed out waiting for the client") from None

    def _reject(self, reason: Reason, detail: str, raw: bytes) -> None:
        if self.handshake_until is not None:      # a stranger's bytes are refused, not kept
            log.warning("Refused a forward client before its handshake.", extra={
                "source": self.source.name, "peer": self.peer, "reason": reason.value})
            raise Closed(detail)
        self.source.dead_letter(raw, self.peer, None, reason, detail)
        raise Closed(detail)
