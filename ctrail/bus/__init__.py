"""The bus: the one seam between stages and the transport (a durable local log, or Kafka).

Stage code sees only these protocols. Delivery is at least once: a consumer's records are
delivered again after a restart unless `commit` was called for them, so every handler must
tolerate duplicates (our writes are idempotent by event id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, Sequence

RAW: Final = "ctrail.raw"
EVENTS: Final = "ctrail.events"
ALERTS: Final = "ctrail.alerts"
DLQ: Final = "ctrail.dlq"
ENTITIES: Final = "ctrail.entities"
# Correlation candidates (base-rule matches, as small alerts), keyed by correlation id and
# group-by values: the repartition that brings one group's candidates to one correlate worker.
CORRELATE: Final = "ctrail.correlate"
ALL_TOPICS: Final = (RAW, EVENTS, ALERTS, DLQ, ENTITIES, CORRELATE)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    offset: int          # position of this record in its topic
    next_offset: int     # position just after it: what a commit stores
    partition: int = 0   # Kafka commits per partition; the local log has one per topic


class Producer(Protocol):
    def send(self, topic: str, key: str, value: bytes) -> None:
        """Queue one record. Not durable until `flush` returns."""

    def flush(self) -> None:
        """Block until every queued record is durable (fsynced, or acknowledged by all replicas).
        Raises Unavailable when that cannot be achieved; the caller must not commit its input."""


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_secs: float) -> list[Record]:
        """Up to max_records records after the last polled one; [] when none arrive in time."""

    def commit(self, records: Sequence[Record]) -> None:
        """Mark records processed. Called only after their outputs are flushed; a crash before
        this means they are delivered again."""

    def rewind(self) -> None:
        """Forget what was polled but not committed, so the next poll delivers it again."""

    def lag(self) -> int:
        """How much this group has not yet committed, over its topics; 0 when caught up."""

    def close(self) -> None: ...


class Bus(Protocol):
    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    def close(self) -> None: ...
