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
from ctrail.event import Alert, Event, Rejection

PREFIX: Final = "logs-containertrail"
ALERTS_DATASET: Final = "alerts"
DEAD_LETTERS_DATASET: Final = "dlq"
# A data stream name is lowercase and `-` separates type, dataset and namespace.
_NOT_IN_DATASET = re.compile(r"[^a-z0-9_.]")


@dataclass(frozen=True, slots=True)
class Document:
    item: Item
    stream: str
    id: str
    source: bytes

    def action(self) -> bytes:
        return orjson.dumps({"create": {"_index": self.stream, "_id": self.id}})


def document(item: Item, namespace: str) -> Document:
    return Document(item, stream_of(item, namespace), id_of(item), encode(item))


def id_of(item: Item) -> str:
    return item.id if isinstance(item, Rejection) else item.event.id


def stream_of(item: Item, namespace: str) -> str:
    if isinstance(item, Event):
        return stream(dataset_name(item.event.dataset), namespace)
    if isinstance(item, Alert):
        return stream(ALERTS_DATASET, namespace)
    return stream(DEAD_LETTERS_DATASET, namespace)


def stream(dataset: str, namespace: str) -> str:
    return f"{PREFIX}.{dataset}-{namespace}"


def dataset_name(dataset: str) -> str:
    """event.dataset as the dataset part of a stream name; the two reserved for alerts and dead
    letters get a suffix, so an event stream is never mistaken for theirs."""
    name = _NOT_IN_DATASET.sub("_", dataset.lower()) or "unknown"
    return f"{name}_events" if name in (ALERTS_DATASET, DEAD_LETTERS_DATASET) else name


def bulk_lines(documents: list[Document]) -> list[bytes]:
    lines: list[bytes] = []
    for doc in documents:
        lines.append(doc.action())
        lines.append(doc.source)
    return lines
