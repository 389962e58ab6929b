"""The Fluent Forward Protocol v1, server side, as pure functions over decoded msgpack.

Spec: github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1. Four carrier modes, all
an array `[tag, ...]`:

    Message                  [tag, time, record, option?]
    Forward                  [tag, [[time, record], ...], option?]
    PackedForward            [tag, bin|str (concatenated msgpack [time, record]), option?]
    CompressedPackedForward  the same, option "compressed": "gzip" (one or more gzip members)

`time` is an integer (seconds) or EventTime (ext type 0: big-endian uint32 seconds, uint32
nanoseconds); floats from old clients are accepted too. Option `chunk` asks for `{"ack": chunk}`
once the entries are safe. The handshake (HELO, PING, PONG) proves both sides know the shared
key: sha512 hex digests of salt + hostname + nonce + key. Anything that breaks these shapes is a
ProtocolError: the caller dead-letters the frame and closes the connection, because after a bad
frame the stream position can no longer be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

EVENT_TIME_EXT: Final = 0


class ProtocolError(Exception):
    """A frame that is not Forward Protocol v1; `tag` is set when the frame named one."""

    def __init__(self, detail: str, tag: str | None = None, oversize: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.tag = tag
        self.oversize = oversize


@dataclass(frozen=True, slots=True)
class EventTime:
    nanos: int


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded carrier message: its tag, (time in ns, record) entries, and options."""

    tag: str
    entries: list[tuple[int, dict[Any, Any]]]
    options: dict[Any, Any] = field(default_factory=dict)

    @property
    def chunk(self) -> str | bytes | None:
        chunk = self.options.get("chunk")
        return chunk if isinstance(chunk, (str, bytes)) and chunk else None


def ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT and len(data) == 8:
        seconds, nanos = struct.unpack(">II", data)
        return EventTime(seconds * 1_000_000_000 + nanos)
    return msgpack.ExtType(code, data)


def unpacker(max_buffer_bytes: int) -> msgpack.Unpacker:
    """A streaming unpacker whose buffer (and so each frame) is bounded; strict UTF-8 strings."""
    return msgpack.Unpacker(raw=False, ext_hook=ext_hook, max_buffer_size=max_buffer_bytes,
                            strict_map_key=False, use_list=True)


def decode_message(frame: Any, max_decompressed_bytes: int) -> Message:
    """The carrier message in a decoded frame; raises ProtocolError."""
    if not isinstance(frame, list) or len(frame) < 2:
        raise ProtocolError(f"a frame must be an array [tag, ...], got {_kind(frame)}")
    tag = frame[0]
    if not isinstance(tag, str):
        raise ProtocolError(f"the tag is a {_kind(tag)}, not a string")
    second = frame[1]
    if isinstance(second, list):                                    # Forward
        options = _options(frame, 2, tag)
        return Message(tag, [_entry(e, tag) for e in second], options)
    if isinstance(second, (bytes, str)):                            # (Compressed)PackedForward
        options = _options(frame, 2, tag)
        data = second.encode() if isinstance(second, str) else second
        compressed = options.get("compressed", "text")
        if compressed == "gzip":
            data = gunzip(data, max_decompressed_bytes, tag)
        elif compressed != "text":
            raise ProtocolError(f"unknown compression {compressed!r:.20}", tag)
        return Message(tag, unpack_entries(data, tag), options)
    if len(frame) < 3:
        raise ProtocolError("a Message-mode frame needs [tag, time, record]", tag)
    options = _options(frame, 3, tag)                               # Message
    return Message(tag, [_entry([second, frame[2]], tag)], options)


def unpack_entries(data: bytes, tag: str) -> list[tuple[int, dict[Any, Any]]]:
    """The [time, record] entries concatenated in a PackedForward payload."""
    entries = msgpack.Unpacker(raw=False, ext_hook=ext_hook, strict_map_key=False,
                               max_buffer_size=max(len(data), 1))
    decoded: list[tuple[int, dict[Any, Any]]] = []
    end = 0
    try:
        entries.feed(data)
        for entry in entries:
            decoded.append(_entry(entry, tag))
            end = entries.tell()        # tell() also counts a trailing partial entry
    except (ValueError, TypeError, msgpack.UnpackException) as exc:    # TypeError: a list key
        raise ProtocolError(f"packed entries are not msgpack: {exc}", tag) from None
    if end != len(data):
        raise ProtocolError("packed entries end in the middle of an entry", tag)
    return decoded


def gunzip(data: bytes, max_bytes: int, tag: str) -> bytes:
    """Concatenated gzip members, inflated to at most max_bytes (a small bomb stays small)."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise ProtocolError(f"gzip payload is corrupt: {exc}", tag) from None
        if len(out) > max_bytes:
            raise ProtocolError(f"gzip payload inflates past {max_bytes} bytes", tag, True)
        if not inflater.eof:
            raise ProtocolError("gzip payload is truncated", tag)
        data = inflater.unused_data
    return bytes(out)


def _options(frame: list[Any], index: int, tag: str) -> dict[Any, Any]:
    if len(frame) > index + 1:
        raise ProtocolError(f"a frame has {len(frame)} elements, expected at most {index + 1}",
                            tag)
    options = frame[index] if len(frame) > index else None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ProtocolError(f"the option is a {_kind(options)}, not a map", tag)
    return options


def _entry(entry: Any, tag: str) -> tuple[int, dict[Any, Any]]:
    if not isinstance(entry, list) or len(entry) != 2:
        raise ProtocolError(f"an entry must be [time, record], got {_kind(entry)}", tag)
    when, record = entry
    if not isinstance(record, dict):
        raise ProtocolError(f"a record is a {_kind(record)}, not a map", tag)
    return time_nanos(when, tag), record


def time_nanos(when: Any, tag: str) -> int:
    if isinstance(when, EventTime):
        return when.nanos
    if isinstance(when, int) and not isinstance(when, bool) and when >= 0:
        return when * 1_000_000_000
    if isinstance(when, float) and 0 <= when < 2**33:
        return int(when * 1_000_000_000)
    raise ProtocolError(f"an entry time is {_kind(when)}, not an integer or EventTime", tag)


def _kind(value: Any) -> str:
    return type(value).__name__


# The handshake. Fluentd's in_forward is the reference: HELO carries a nonce and, when users are
# configured, a salt for their password digests; PONG false carries the reason and empty strings.

def helo(nonce: bytes, auth_salt: bytes, keepalive: bool = True) -> bytes:
    return msgpack.packb(["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": keepalive}],
                         use_bin_type=True)


def digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha512()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
    return hasher.hexdigest()


def check_ping(ping: Any, nonce: bytes, auth_salt: bytes, shared_key: str,
               users: dict[str, str]) -> tuple[bool, str, bytes | str]:
    """(authenticated, reason, the client's shared-key salt). Digests compare in constant time."""
    if not (isinstance(ping, list) and len(ping) == 6 and ping[0] == "PING"):
        return False, "expected a PING message", b""
    _ping, hostname, salt, key_digest, username, password_digest = ping
    if not all(isinstance(v, (str, bytes)) for v in (hostname, salt, key_digest, username,
                                                       password_digest)):
        return False, "malformed PING", b""
    expected = digest(salt, hostname, nonce, shared_key)
    if not hmac.compare_digest(_text(key_digest), expected):
        return False, "shared_key mismatch", b""
    if users:
        password = users.get(_text(username))
        wanted = digest(auth_salt, username, password) if password is not None else ""
        if not (wanted and hmac.compare_digest(_text(password_digest), wanted)):
            return False, "username/password mismatch", b""
    return True, "", salt


def pong(ok: bool, reason: str, salt: bytes | str, nonce: bytes, self_hostname: str,
         shared_key: str) -> bytes:
    if not ok:
        return msgpack.packb(["PONG", False, reason, "", ""], use_bin_type=True)
    proof = digest(salt, self_hostname, nonce, shared_key)
    return msgpack.packb(["PONG", True, "", self_hostname, proof], use_bin_type=True)


def ack(chunk: str | bytes) -> bytes:
    return msgpack.packb({"ack": chunk}, use_bin_type=True)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
