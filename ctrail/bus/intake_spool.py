"""The intake spool (Kafka mode, `bus.intake_spool`): intake's records on local disk first.

Intake appends what it accepts to DATA_DIR/intake-spool, a durable local log (the local bus's
segments and offsets, ctrail.bus.local, not a format of its own), and acknowledges its senders
once that append is fsynced: a webhook sender is answered in milliseconds whether Kafka is fast,
slow or away (kube-apiserver gives up on a batch after about 80 s of retries). A forwarder
thread ships the spool to Kafka (acks=all), commits its position in the spool only after Kafka
acknowledged, and deletes the segments it has shipped, as Vector's disk buffer and Fluent Bit's
filesystem storage do.

What the local log guarantees holds here too: on a full disk (or below `intake_min_free_bytes`)
an append fails whole, the torn bytes are cut before the next append, and intake answers 503 /
holds its checkpoints until space returns. A crash between Kafka's acknowledgement and the
commit ships those records again; the stores keep one document per event id, and an event's id
hashes the raw record, so a duplicate on ctrail.raw stores nothing twice.

The backlog (what intake acknowledged and Kafka has not yet) is kept as the records go, for
/metrics (`ctrail_intake_spool_*`): counted as appends become durable and as the forwarder
commits, so a scrape reads a few numbers instead of the segments. Only a spool left by an
earlier run is counted from its segments, once, when its topic is opened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Sequence

from ctrail.bus import DLQ, RAW, Bus, Consumer, Producer, Record
from ctrail.bus.local import HEADER, LocalBus, LocalTopic
from ctrail.errors import Retryable
from ctrail.runtime.telemetry import Sample

log = logging.getLogger(__name__)
DIRECTORY: Final = "intake-spool"
# What intake writes: records (and the dead letters of records it judged) on ctrail.raw; the
# dead letters of torn audit-spool lines on ctrail.dlq.
TOPICS: Final = (RAW, DLQ)
SEGMENT_BYTES: Final = 16 * 1024 * 1024     # small, so shipped segments are deleted early
FORWARD_RECORDS: Final = 5000               # records per Kafka flush
FORWARDER_GROUP: Final = "kafka-forwarder"
BACKOFF_SECS: Final = (0.5, 30.0)
AGE_RESOLUTION_SECS: Final = 1.0            # flushes within this are remembered as one


@dataclass(frozen=True)
class SpoolBacklog:
    """What the spool holds that Kafka has not acknowledged yet: records, their bytes in the
    spool's segments, and when the oldest of them was appended (wall clock; None when none).
    Sent from the intake process to `ctrail run`'s /metrics as it is."""

    records: int = 0
    bytes: int = 0
    oldest_at: float | None = None

    def samples(self, now: float) -> list[Sample]:
        age = 0.0 if self.oldest_at is None else max(0.0, now - self.oldest_at)
        return [
            Sample("intake_spool_records", "gauge", "records intake acknowledged to their "
                   "senders (in the intake spool) that Kafka has not acknowledged yet",
                   self.records),
            Sample("intake_spool_bytes", "gauge", "bytes of those records in the intake "
                   "spool's segments (DATA_DIR/intake-spool)", self.bytes),
            Sample("intake_spool_oldest_record_age_seconds", "gauge", "how long the oldest "
                   "record not yet acknowledged by Kafka has waited in the intake spool (0 "
                   "when none)", round(age, 1))]


class _TopicBacklog:
    """One spooled topic's figures: what the forwarder committed, records not yet shipped,
    appends not yet durable, and (durable end, wall time) of recent flushes, oldest first,
    one entry per AGE_RESOLUTION_SECS: the first entry past `committed` dates the oldest
    unshipped record."""

    def __init__(self, committed: int, records: int) -> None:
        self.committed = committed
        self.records = records
        self.pending = 0
        self.flushes: deque[list[float]] = deque()

    def flushed(self, end: int, now: float) -> None:
        self.records += self.pending
        self.pending = 0
        if self.flushes and now - self.flushes[-1][1] < AGE_RESOLUTION_SECS:
            self.flushes[-1][0] = end
        else:
            self.flushes.append([end, now])

    def shipped(self, records: int, committed: int) -> None:
        self.records -= records
        self.committed = committed
        while self.flushes and self.flushes[0][0] <= committed:
            self.flushes.popleft()


class IntakeSpool:
    """The spool of one data directory (its lock: one intake process at a time) and its
    forwarder to `bus`. With `accepts` false, intake writes `bus` itself and the spool only
    ships what an earlier run left in it (the key was turned off with records still spooled)."""

    def __init__(self, directory: Path, bus: Bus, min_free_bytes: int,
                 accepts: bool = True) -> None:
        self.bus = bus
        self.accepts = accepts
        self._log = LocalBus(directory, SEGMENT_BYTES, intake_min_free_bytes=min_free_bytes)
        # Held from an append (or flush) to its count, so the counts follow the topics.
        self._accounting = threading.Lock()
        self._backlogs: dict[str, tuple[LocalTopic, _TopicBacklog]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forward_until_stopped, daemon=True,
                                        name="intake-spool-forwarder")

    def producer(self) -> Producer:
        """Where intake appends: the spool (durable once flushed), or the bus itself."""
        return _SpoolProducer(self, self._log.producer()) if self.accepts \
            else self.bus.producer()

    def backlog(self) -> SpoolBacklog:
        """Records and bytes intake appended that Kafka has not acknowledged, and the time of
        the oldest of them (counted as they go: no segment is read)."""
        with self._accounting:
            backlogs = list(self._backlogs.values())
            starts = [b.flushes[0][1] for _topic, b in backlogs if b.flushes]
            return SpoolBacklog(sum(b.records for _topic, b in backlogs),
                                sum(topic.durable_end - b.committed for topic, b in backlogs),
                                min(starts, default=None))

    def samples(self) -> list[Sample]:
        """The backlog for /metrics (Telemetry.add_source)."""
        return self.backlog().samples(time.time())

    def _topic_backlog(self, name: str) -> tuple[LocalTopic, _TopicBacklog]:
        """A topic and its figures, opened at its first use (with `_accounting` held, before
        any append of this run): what an earlier run left unshipped is counted there, once."""
        if name not in self._backlogs:
            topic = self._log.topic(name)
            offset = self._log.offset_path(name, FORWARDER_GROUP)
            committed = max(int(offset.read_text() or 0) if offset.exists() else 0,
                            topic.bases[0])
            backlog = _TopicBacklog(committed, count_records(topic, committed,
                                                             topic.durable_end))
            if backlog.records:
                # Appended by an earlier run at the latest when its segment was last written.
                _base, segment = topic.segment_for(committed)
                backlog.flushes.append([topic.durable_end, segment.stat().st_mtime])
            self._backlogs[name] = (topic, backlog)
        return self._backlogs[name]

    def _count_shipped(self, records: Sequence[Record]) -> None:
        shipped = Counter(record.topic for record in records)
        ends: dict[str, int] = {}
        for record in records:
            ends[record.topic] = max(ends.get(record.topic, 0), record.next_offset)
        with self._accounting:
            for name, count in shipped.items():
                self._topic_backlog(name)[1].shipped(count, ends[name])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the forwarder once it has shipped what it can (intake has stopped appending);
        what Kafka did not take stays spooled for the next start."""
        self._stop.set()
        with self._log.wakeup:
            self._log.wakeup.notify_all()
        if self._thread.ident is not None:          # started
            self._thread.join()
        self._log.close()

    def _connect(self) -> tuple[Consumer, Producer] | None:
        """The spool's reader and Kafka's writer, once both can be had (registering the
        reader writes its offset file: not on a full disk); None when stopped first."""
        backoff = BACKOFF_SECS[0]
        while not self._stop.is_set():
            try:
                with self._accounting:
                    for name in TOPICS:
                        self._topic_backlog(name)
                return self._log.consumer(FORWARDER_GROUP, TOPICS), self.bus.producer()
            except (Retryable, OSError) as exc:
                log.warning("Cannot start shipping the intake spool yet; retrying.",
                            extra={"error": str(exc), "retry_in_secs": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_SECS[1])
        return None

    def _forward_until_stopped(self) -> None:
        connected = self._connect()
        if connected is None:
            return
        consumer, kafka = connected
        backoff = BACKOFF_SECS[0]
        while True:
            try:
                records = consumer.poll(FORWARD_RECORDS, 0.0 if self._stop.is_set() else 1.0)
                if not records:
                    if self._stop.is_set():
                        return
                    continue
                for record in records:
                    kafka.send(record.topic, record.key.decode(), record.value)
                kafka.flush()                   # acknowledged by all in-sync replicas
                consumer.commit(records)
                self._count_shipped(records)
                for topic in TOPICS:
                    self._log.topic(topic).delete_consumed()
                backoff = BACKOFF_SECS[0]
            except Retryable as exc:
                # Shipped again (duplicates store nothing twice); a Kafka producer whose
                # flush failed has renewed itself.
                consumer.rewind()
                left = consumer.lag()
                if self._stop.is_set():
                    log.warning("Records stay in the intake spool; they are shipped at the "
                                "next start.", extra={"bytes": left, "error": str(exc)})
                    return
                log.warning("Cannot ship the intake spool to Kafka yet; retrying.",
                            extra={"spooled_bytes": left, "error": str(exc),
                                   "retry_in_secs": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_SECS[1])
            except Exception:
                # A bug must not stop the shipping for good: the records stay spooled.
                log.exception("Shipping the intake spool failed; retrying.")
                consumer.rewind()
                if self._stop.wait(BACKOFF_SECS[1]):
                    return


def count_records(topic: LocalTopic, start: int, end: int) -> int:
    """How many records lie between two positions of a topic (frame boundaries), from its
    segments' frame headers."""
    count = 0
    while start < end:
        base, path = topic.segment_for(start)
        later = [b for b in topic.bases if b > base]
        stop = min(end, later[0]) if later else end
        with open(path, "rb") as segment:
            segment.seek(start - base)
            data = segment.read(stop - start)
        at = 0
        while at + HEADER.size <= len(data):
            value_len, _crc, key_len = HEADER.unpack_from(data, at)
            at += HEADER.size + key_len + value_len
            count += 1
        start = stop
    return count


class _SpoolProducer:
    """The local log's producer (a flush wakes the forwarder), refusing topics the forwarder
    does not ship, and counting what it makes durable in the spool's backlog."""

    def __init__(self, spool: IntakeSpool, producer: Producer) -> None:
        self._spool = spool
        self._producer = producer

    def send(self, topic: str, key: str, value: bytes) -> None:
        if topic not in TOPICS:
            raise ValueError(f"the intake spool does not ship {topic}")
        with self._spool._accounting:
            _topic, backlog = self._spool._topic_backlog(topic)
            self._producer.send(topic, key, value)
            backlog.pending += 1

    def flush(self) -> None:
        """A topic's pending appends (every producer's) are all written by a flush, or all
        discarded by one that failed (its epoch moves on); either way counted here."""
        with self._spool._accounting:
            before = {name: (topic.epoch, topic.durable_end)
                      for name, (topic, _b) in self._spool._backlogs.items()}
            try:
                self._producer.flush()
            finally:
                now = time.time()
                for name, (topic, backlog) in self._spool._backlogs.items():
                    epoch, end = before.get(name, (topic.epoch, topic.durable_end))
                    if topic.epoch != epoch:
                        backlog.pending = 0
                    elif topic.durable_end != end:
                        backlog.flushed(topic.durable_end, now)
