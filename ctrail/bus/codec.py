"""What the bus carries, to and from bytes.

- ctrail.raw: `RawEntry`, a record as intake took it in (bytes not yet parsed), framed as one
  JSON header line then the bytes, so intake does no work per event and the processing chain
  decodes each event once.
- every other topic: Event, Alert and Rejection as JSON (pydantic-core's, no dict round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
from pydantic import BaseModel, ValidationError

from ctrail.bus import ALERTS, CORRELATE, DLQ, EVENTS, RAW, Producer
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Alert, Event, Rejection

Item = Event | Alert | Rejection
# RawEntry.format of an Event we built ourselves (our own audit trail, a replayed item): the
# chain decodes it as it is instead of parsing it.
EVENT_FORMAT: Final = "event"
# RawEntry.format of a dead letter intake built (a record it had to cut, or one its source
# judged malformed): the chain keeps it as it is. Intake writes ctrail.raw and nothing else.
DEAD_LETTER_FORMAT: Final = "dead-letter"


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One record on ctrail.raw: what a source read, and what the chain needs to parse it."""

    format: str           # the parser's `--source` name (k8s-audit, falco...), or EVENT_FORMAT
    source: str           # who took it in: `ingest`, a configured source's name, `replay`...
    origin: str           # "path:line", or "endpoint request-id"
    received: datetime
    data: bytes

    @property
    def key(self) -> str:
        return self.origin

    def encode(self) -> bytes:
        header = orjson.dumps([self.format, self.source, self.origin, self.received])
        return header + b"\n" + self.data          # orjson never writes a raw newline

    @classmethod
    def decode(cls, value: bytes) -> "RawEntry":
        """Raises InvalidInput when `value` is not a RawEntry."""
        header, sep, data = value.partition(b"\n")
        try:
            fmt, source, origin, received = orjson.loads(header)
            return cls(str(fmt), str(source), str(origin), datetime.fromisoformat(received),
                       data)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise InvalidInput(Reason.UNDECODABLE, f"{RAW}: not a raw entry ({exc})") from None


def event_entry(event: Event, source: str) -> RawEntry:
    """One of our own Events (an audit-trail record, a replayed item) for ctrail.raw, where the
    chain enriches, detects and stores it like any other."""
    return RawEntry(EVENT_FORMAT, source, f"{source} {event.event.id}", event.event.ingested,
                    encode(event))


def publish_event(producer: Producer, event: Event, source: str) -> None:
    """Queue one of our own Events for the chain (see event_entry)."""
    entry = event_entry(event, source)
    producer.send(RAW, key=entry.key, value=entry.encode())


MODEL_OF_TOPIC: Final[dict[str, type[BaseModel]]] = {
    EVENTS: Event,
    ALERTS: Alert,
    CORRELATE: Alert,                 # correlation candidates (detectors.correlation)
    DLQ: Rejection,
}


def encode(item: BaseModel) -> bytes:
    return item.__pydantic_serializer__.to_json(item, by_alias=True, exclude_none=True)


def decode(topic: str, value: bytes) -> Item | RawEntry:
    """Decode a record of `topic`; raises InvalidInput when it is not one of ours."""
    if topic == RAW:
        return RawEntry.decode(value)
    try:
        model = MODEL_OF_TOPIC[topic]
    except KeyError:
        raise InvalidInput(Reason.UNDECODABLE, f"no model for topic {topic}") from None
    try:
        return model.model_validate_json(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidInput(Reason.UNDECODABLE, f"{topic}: {exc.error_count()} errors, "
                                               f"first: {exc.errors()[0]['msg']}") from None
