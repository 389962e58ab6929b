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
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Final

from ctrail.bus import DLQ, RAW, Bus, Consumer, Producer
from ctrail.bus.local import LocalBus
from ctrail.errors import Retryable

log = logging.getLogger(__name__)
DIRECTORY: Final = "intake-spool"
# What intake writes: records (and the dead letters of records it judged) on ctrail.raw; the
# dead letters of torn audit-spool lines on ctrail.dlq.
TOPICS: Final = (RAW, DLQ)
SEGMENT_BYTES: Final = 16 * 1024 * 1024     # small, so shipped segments are deleted early
FORWARD_RECORDS: Final = 5000               # records per Kafka flush
FORWARDER_GROUP: Final = "kafka-forwarder"
BACKOFF_SECS: Final = (0.5, 30.0)


class IntakeSpool:
    """The spool of one data directory (its lock: one intake process at a time) and its
    forwarder to `bus`. With `accepts` false, intake writes `bus` itself and the spool only
    ships what an earlier run left in it (the key was turned off with records still spooled)."""

    def __init__(self, directory: Path, bus: Bus, min_free_bytes: int,
                 accepts: bool = True) -> None:
        self.bus = bus
        self.accepts = accepts
        self._log = LocalBus(directory, SEGMENT_BYTES, intake_min_free_bytes=min_free_bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forward_until_stopped, daemon=True,
                                        name="intake-spool-forwarder")

    def producer(self) -> Producer:
        """Where intake appends: the spool (durable once flushed), or the bus itself."""
        return _SpoolProducer(self._log.producer()) if self.accepts else self.bus.producer()

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
                for topic in TOPICS:
                    self._log.topic(topic).delete_consumed()
                backoff = BACKOFF_SECS[0]
            except Retryable as exc:
                consumer.rewind()               # shipped again: duplicates store nothing twice
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


class _SpoolProducer:
    """The local log's producer (a flush wakes the forwarder), refusing topics the forwarder
    does not ship."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def send(self, topic: str, key: str, value: bytes) -> None:
        if topic not in TOPICS:
            raise ValueError(f"the intake spool does not ship {topic}")
        self._producer.send(topic, key, value)

    def flush(self) -> None:
        self._producer.flush()
