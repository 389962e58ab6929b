"""Helpers every JSON wire format shares: strict decoding, timestamps, exact member spans.

Each one turns a malformed input into InvalidInput with a reason, so parsers never leak another
exception to the stage runner.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from collector.redact import Redactor, hinted
from ctrail.errors import InvalidInput, Reason
from ctrail.runtime.deadletter import redacted_bytes

MAX_DEPTH: Final = 64
"""Deeper raw documents are refused: the bus and store serialisers have recursion limits, and no
real source nests this deep."""

_decoder = json.JSONDecoder()


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(Reason.INVALID_ENCODING, f"not UTF-8 at byte {exc.start}") from None


def load_object(data: bytes | str, what: str = "record", *, depth_checked: bool = True
                ) -> dict[str, Any]:
    """A JSON object, not too deep; raises InvalidInput otherwise. `depth_checked=False`
    leaves the depth to the caller, who checks the parts it keeps (an EventList's items)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(Reason.INVALID_JSON, f"{what}: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{what} is a JSON {type(doc).__name__}, "
                                                   "not an object")
    if depth_checked:
        check_depth(doc, data)
    return doc


def check_depth(doc: Any, raw: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Refuse `doc` (decoded from `raw`) when nested deeper than `limit`. No document nests
    deeper than it has brackets, and counting them runs at C speed: only a document with more
    than `limit` brackets is walked (most audit events have about ten)."""
    opened = (raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes)
              else raw.count("{") + raw.count("["))
    if opened <= limit:
        return
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise InvalidInput(Reason.SCHEMA_MISMATCH, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def parse_time(value: Any, field: str) -> datetime:
    """RFC 3339 with up to nanoseconds (kept to microseconds); naive is UTC."""
    if not isinstance(value, str):
        raise InvalidInput(Reason.INVALID_TIMESTAMP, f"{field} is not a string: {value!r:.60}")
    text = value[:-1] + "Z" if value.endswith("z") else value    # Go accepts a lowercase zone
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(Reason.INVALID_TIMESTAMP, f"{field} is not a timestamp: {value!r:.60}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def from_epoch(value: Any, field: str, per_second: int = 1) -> datetime:
    """An integer epoch in seconds (per_second=1) or nanoseconds (per_second=10**9)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(Reason.INVALID_TIMESTAMP, f"{field} is not an integer: {value!r:.60}")
    seconds, fraction = divmod(value, per_second)
    try:
        moment = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(Reason.INVALID_TIMESTAMP, f"{field} is out of range: {value}") from None
    return moment.replace(microsecond=fraction * 1_000_000 // per_second)


def optional_str(doc: dict[str, Any], key: str, where: str = "") -> str | None:
    """doc[key] when it is a non-empty string, None when absent, null or empty."""
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{where}{key} is not a string")
    return value


def optional_obj(doc: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{where}{key} is not an object")
    return value


def optional_int(doc: dict[str, Any], key: str, where: str = "") -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"{where}{key} is not an integer")
    return value


def split_address(addr: str | None) -> tuple[str | None, str | None]:
    """("ip", None) or (None, "host") from "ip:port", "[v6]:port", "ip" or "host:port": only a
    real IP goes to source.ip, which stores index as the ip type."""
    if not addr:
        return None, None
    host = addr
    if addr.startswith("[") and "]" in addr:
        host = addr[1:addr.index("]")]
    elif addr.count(":") == 1:
        host = addr.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(host)), None
    except ValueError:
        return None, host or None


def member_spans(text: str, key: str) -> list[tuple[int, int]] | None:
    """Exact (start, end) of each element of a top-level object's `key` array, so each element
    keeps its own bytes as `event.original`. None when the document has no such array."""
    try:
        return _member_spans(text, key)
    except (ValueError, IndexError, RecursionError):
        return None


def _member_spans(text: str, key: str) -> list[tuple[int, int]] | None:
    pos = _skip(text, 0)
    if pos >= len(text) or text[pos] != "{":
        return None
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != "}":
        name, pos = _decoder.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)          # past the colon
        if name == key and text[pos] == "[":
            return _array_spans(text, pos)
        _value, pos = _decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return None


def _array_spans(text: str, pos: int) -> list[tuple[int, int]]:
    spans = []
    pos = _skip(text, pos + 1)
    while text[pos] != "]":
        _value, end = _decoder.raw_decode(text, pos)
        spans.append((pos, end))
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return spans


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


class RedactingParser:
    """What every parser shares: the deployment's redactor (without one, a key of this process
    only, so a clear secret is never kept either way), free-text redaction for the dead letters
    of records that did not parse, and the scrub intake applies before it appends a record
    (Docker events, container log lines, registry notifications; audit events and Falco alerts
    have scrubs of their own)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor.ephemeral()

    def redact_text(self, text: str) -> str:
        return self.redactor.redact_text(text)

    def scrub(self, data: bytes) -> bytes:
        """The record with every secret the policy finds hashed (collector.redact): each line
        (a reassembled container log record holds several) that is a JSON object walked whole,
        any other line scanned as text; the record itself, byte for byte, when it holds none."""
        if not hinted(data):
            return data
        lines = data.split(b"\n")
        scrubbed = [self._scrub_line(line) for line in lines]
        if all(new is old for new, old in zip(scrubbed, lines)):
            return data
        return b"\n".join(scrubbed)

    def _scrub_line(self, line: bytes) -> bytes:
        stripped = line.strip()
        if stripped.startswith(b"{") and stripped.endswith(b"}"):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                redacted = self.redactor.record(doc)
                return line if redacted is None else orjson.dumps(redacted)
        return redacted_bytes(line, self.redactor.redact_text)
