"""The bus: the one seam between stages and the transport (a durable local log, or Kafka).

Stage code sees only these protocols; nothing outside this package imports an implementation
(ctrail.bus.local, ctrail.bus.kafka) or asks which one it has: what differs between them that a
caller must know is asked here (`single_process`, `compacts`, `group_members`, and a bus
section's `read_topic`). Delivery is at least once: a consumer's records are
delivered again after a restart unless `commit` was called for them, so every handler must
tolerate duplicates (our writes are idempotent by event id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    from ctrail.bus.intake_spool import IntakeSpool

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
    def poll(self, max_records: int, timeout_secs: float,
             max_bytes: int | None = None) -> list[Record]:
        """Up to max_records records after the last polled one; [] when none arrive in time.
        With max_bytes, the records stop once their values reach it (the first record is
        always given, however large): a webhook record holds up to 400 events, so a count
        alone can make a batch of seconds."""

    def commit(self, records: Sequence[Record]) -> None:
        """Mark records processed. Called only after their outputs are flushed; a crash before
        this means they are delivered again."""

    def rewind(self) -> None:
        """Forget what was polled but not committed, so the next poll delivers it again."""

    def lag(self) -> int:
        """How much this group has not yet committed, over its topics; 0 when caught up."""

    def close(self) -> None: ...


class Bus(Protocol):
    # True when one process owns the bus (the local log, locked by its data directory): that
    # process runs every stage, and no other process can join its groups. False on Kafka.
    @property
    def single_process(self) -> bool: ...

    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    def compacts(self, topic: str) -> bool:
        """True when the transport itself keeps only the latest record per key of `topic`
        (Kafka's compacted ctrail.entities); False when its one writer must compact it (the
        local log: enrich.persistence.LocalCompaction appends a snapshot, then commits past
        what it replaces, and segments every group has passed are deleted)."""

    def group_members(self, group: str) -> int:
        """How many consumers, in any process, are members of `group` now; always 0 on a
        single-process bus, whose groups no other process can join."""

    def group_name(self, group: str) -> str:
        """`group` as the transport names it (on Kafka, with the namespace), for messages."""

    def written_elsewhere(self, topic: str) -> None:
        """From now on another process appends `topic` (`ctrail run`'s intake process): this
        one only reads it. Called before the topic is first used. Kafka: nothing to do."""

    def writes(self, topic: str) -> bool:
        """Whether this process may append `topic` (False after written_elsewhere)."""

    def close(self) -> None: ...


class BusConfig(Protocol):
    """The `bus:` section of the settings (`type: local` or `type: kafka`): what a command may
    ask before, or instead of, opening the bus."""

    single_process: bool              # as the bus it builds

    def build(self, data_dir: Path, guest: bool = False) -> Bus:
        """`guest`: for a process the bus's owner started (`ctrail run`'s intake), which
        writes the topics the owner said are written elsewhere, under the owner's lock."""

    def open_intake_spool(self, data_dir: Path, bus: Bus) -> IntakeSpool | None:
        """The spool intake appends to instead of `bus` (Kafka with `intake_spool`), not yet
        started; None: intake appends to `bus` itself."""

    def read_topic(self, data_dir: Path, topic: str, reader: str,
                   timeout_secs: float) -> Iterator[bytes]:
        """The values of `topic` from its start to its current end, read-only: nothing is
        committed that a stage reads by. The local log is read from its segment files without
        its lock (so this works beside the process that owns it); on Kafka in a consumer group
        of this read's own, named after `reader`, until the group's lag is 0 or the timeout."""
