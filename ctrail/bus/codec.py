"""Event, Alert and Rejection to and from bytes on the bus (pydantic-core's JSON, no dict trip)."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ValidationError

from ctrail.bus import ALERTS, CORRELATE, DLQ, EVENTS, RAW
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Alert, Event, Rejection

Item = Event | Alert | Rejection

MODEL_OF_TOPIC: Final[dict[str, type[BaseModel]]] = {
    RAW: Event,
    EVENTS: Event,
    ALERTS: Alert,
    CORRELATE: Alert,                 # correlation candidates (detectors.correlation)
    DLQ: Rejection,
}


def encode(item: Item) -> bytes:
    return item.__pydantic_serializer__.to_json(item, by_alias=True, exclude_none=True)


def decode(topic: str, value: bytes) -> Item:
    """Decode a record of `topic`; raises InvalidInput when it is not one of ours."""
    try:
        model = MODEL_OF_TOPIC[topic]
    except KeyError:
        raise InvalidInput(Reason.UNDECODABLE, f"no model for topic {topic}") from None
    try:
        return model.model_validate_json(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidInput(Reason.UNDECODABLE, f"{topic}: {exc.error_count()} errors, "
                                               f"first: {exc.errors()[0]['msg']}") from None
