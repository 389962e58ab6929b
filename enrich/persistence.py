"""The entity graph on the `ctrail.entities` topic: append changed entities, rebuild from them.

Each record is one entity's whole current state, keyed `kind/key`, so Kafka's compaction (and
a replay of the local log) keeps what matters: the latest state per entity. States merge
order-independently (enrich.graph), so duplicates and any replay order are harmless.

Readers never commit: every process (an enrich worker, `ctrail timeline`) reads the topic from
its start. On Kafka each reader is a consumer group of its own (a shared group would split the
partitions between readers); on the local log (a single-process bus) one fixed group name, as
one process owns it, and its "start" is the latest snapshot (LocalCompaction, which commits that
position).
An enrich worker keeps reading after the rebuild, so facts learned by other enrich workers (a
push, a workload change, keyed elsewhere) reach its graph too.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Final, Iterable

import orjson

from ctrail.bus import ENTITIES, Bus, Consumer, Producer, Record
from enrich.graph import EntityGraph

log = logging.getLogger(__name__)
LOCAL_GROUP: Final = "entity-graph"
POLL_RECORDS: Final = 5000


def encode(kind: str, key: str, state: dict[str, object]) -> tuple[str, bytes]:
    return f"{kind}/{key}", orjson.dumps({"kind": kind, "key": key, "state": state})


def apply_record(graph: EntityGraph, value: bytes) -> bool:
    try:
        doc = orjson.loads(value)
        graph.restore(doc["kind"], doc["key"], doc["state"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # Not ours or from a newer version: skipping one fact is better than no graph.
        log.warning("Skipped an unreadable entity record.")
        return False
    return True


class FactLog:
    """Appends the graph's changed entities; `flush` returns when they are durable."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.sent = 0                       # records appended by this process, in all

    def publish(self, graph: EntityGraph) -> int:
        sent = 0
        for kind, key, state in graph.take_dirty():
            record_key, value = encode(kind, key, state)
            self.producer.send(ENTITIES, record_key, value)
            sent += 1
        if sent:
            self.producer.flush()
        self.sent += sent
        return sent


class LocalCompaction:
    """What Kafka's log compaction does for `ctrail.entities`, for the local log of embedded
    mode, where one process (this enricher) is the only writer.

    When the records appended since the last snapshot outnumber the live entities (and
    MIN_RECORDS: as Kafka's default min.cleanable.dirty.ratio of 0.5), the whole graph (expired entities already dropped) is appended again, then
    the reader's group commits the position where that snapshot starts. Readers start from
    their group's committed position, and the local log deletes the segments every group has
    committed past (at its next segment roll): the disk holds the live graph and what changed
    since, not every fact ever learned. `ctrail timeline`, which reads the segment files
    without the bus (BusConfig.read_topic), reads older segments too while they last:
    harmless, states merge."""

    MIN_RECORDS: Final = 10_000

    def __init__(self, reader: "EntityReader", log: FactLog) -> None:
        self.reader, self.log = reader, log
        self.since = log.sent

    def due(self, graph: EntityGraph) -> bool:
        return self.log.sent - self.since > max(self.MIN_RECORDS, len(graph))

    def snapshot(self, graph: EntityGraph) -> int:
        """Append the whole graph; the records before it are no longer needed. Returns the
        records appended."""
        self.reader.tail(graph)             # all this process wrote is in the graph now
        before_snapshot = self.reader.last_read
        graph.mark_all_dirty()
        sent = self.log.publish(graph)      # durable when it returns
        if before_snapshot is not None:
            self.reader.consumer.commit([before_snapshot])
        self.since = self.log.sent
        log.info("Compacted the local entity log.", extra={"entities": sent})
        return sent


class EntityReader:
    """Reads `ctrail.entities` into a graph from offset 0 (on Kafka in a group of its own)."""

    def __init__(self, bus: Bus) -> None:
        group = LOCAL_GROUP if bus.single_process else \
            f"{LOCAL_GROUP}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.consumer: Consumer = bus.consumer(group, [ENTITIES])
        self.local = bus.single_process
        self.last_read: Record | None = None      # the latest record applied

    def catch_up(self, graph: EntityGraph, timeout_secs: float = 60.0) -> int:
        """Read until the end of the topic (or the timeout); returns the records applied.

        The local log's poll reads to its end at once, so an empty poll means caught up.
        Kafka's may be empty while the group is joining or a fetch is slow, so there the
        reader's group (its own, used by nobody else) commits what it applied, and caught up
        means the group's lag is 0: the end offsets, not a guess from empty polls."""
        deadline = time.monotonic() + timeout_secs
        applied = 0
        while time.monotonic() < deadline:
            records = self.consumer.poll(POLL_RECORDS, timeout_secs=0 if self.local else 1.0)
            if records:
                applied += self._apply(graph, records)
                if not self.local:
                    self.consumer.commit(records)
                continue
            if self.local or self.consumer.lag() == 0:
                break
        else:
            log.warning("Stopped rebuilding the entity graph at the timeout.",
                        extra={"applied": applied, "timeout_secs": timeout_secs})
        return applied

    def tail(self, graph: EntityGraph) -> int:
        """Apply what others appended since the last read (does not wait)."""
        applied = 0
        while records := self.consumer.poll(POLL_RECORDS, timeout_secs=0):
            applied += self._apply(graph, records)
        return applied

    def _apply(self, graph: EntityGraph, records: list[Record]) -> int:
        self.last_read = records[-1]
        return sum(apply_record(graph, r.value) for r in records)

    def close(self) -> None:
        self.consumer.close()


def rebuild(graph: EntityGraph, values: Iterable[bytes]) -> int:
    """The graph from the topic's values, read-only (BusConfig.read_topic); returns the
    records applied."""
    return sum(apply_record(graph, value) for value in values)
