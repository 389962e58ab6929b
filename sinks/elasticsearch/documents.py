"""Items as bulk `create` actions: which data stream, which `_id`, and the document bytes.

The document is the bus encoding (ctrail.bus.codec.encode), byte for byte: what a search
returns is exactly what was stored, and nothing is re-shaped on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import orjson

from ctrail.bus.codec import Item, encode
from ctrail.event import Alert, DeadLetterReplay, Event, Rejection

PREFIX: Final = "logs-containertrail"
ALERTS_DATASET: Final = "alerts"
DEAD_LETTERS_DATASET: Final = "dlq"
REPLAYS_DATASET: Final = "dlq_replays"      # `ctrail dlq replay` verdicts (DeadLetterReplay)
# A data stream name is lowercase and `-` separates type, dataset and namespace.
_NOT_IN_DATASET = re.compile(r"[^a-z0-9_.]")


@dataclass(frozen=True, slots=True)
class Document:
    item: Item | DeadLetterReplay
    stream: str
    id: str
    source: bytes

    def action(self) -> bytes:
        return orjson.dumps({"create": {"_index": self.stream, "_id": self.id}})


def document(item: Item | DeadLetterReplay, namespace: str) -> Document:
    return Document(item, stream_of(item, namespace), id_of(item), encode(item))


def id_of(item: Item | DeadLetterReplay) -> str:
    return item.id if isinstance(item, Rejection | DeadLetterReplay) else item.event.id


def stream_of(item: Item | DeadLetterReplay, namespace: str) -> str:
    if isinstance(item, Event):
        return stream(dataset_name(item.event.dataset), namespace)
    if isinstance(item, Alert):
        return stream(ALERTS_DATASET, namespace)
    if isinstance(item, DeadLetterReplay):
        return stream(REPLAYS_DATASET, namespace)
    return stream(DEAD_LETTERS_DATASET, namespace)


def stream(dataset: str, namespace: str) -> str:
    return f"{PREFIX}.{dataset}-{namespace}"


def dataset_name(dataset: str) -> str:
    """event.dataset as the dataset part of a stream name; the names reserved for alerts, dead
    letters and replay verdicts get a suffix, so an event stream is never mistaken for theirs."""
    name = _NOT_IN_DATASET.sub("_", dataset.lower()) or "unknown"
    reserved = (ALERTS_DATASET, DEAD_LETTERS_DATASET, REPLAYS_DATASET)
    return f"{name}_events" if name in reserved else name


def bulk_lines(documents: list[Document]) -> list[bytes]:
    lines: list[bytes] = []
    for doc in documents:
        lines.append(doc.action())
        lines.append(doc.source)
    return lines
