"""The collect step: raw records from a source, parsed, onto the raw topic (or the DLQ).

A source's records are committed (a file checkpoint saved, a webhook client answered) only
after every event and dead letter they produced is durable on the bus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ctrail.bus import DLQ, RAW, Producer
from ctrail.bus.codec import encode
from ctrail.components import Parser, RawRecord, Source
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event, Rejection
from ctrail.runtime.deadletter import rejection
from ctrail.runtime.telemetry import Telemetry

STAGE = "collect"
log = logging.getLogger(__name__)


@dataclass
class CollectCounts:
    accepted: int = 0          # events published
    dead_lettered: int = 0     # records dead-lettered


def parse_record(parser: Parser, record: RawRecord, max_bytes: int) -> list[Event] | Rejection:
    """Events from one record, or the dead letter that keeps it."""
    try:
        if record.truncated or len(record.data) > max_bytes:
            raise InvalidInput(Reason.RECORD_TOO_LARGE,
                               f"record exceeds max_record_bytes ({max_bytes})")
        return parser.parse(record)
    except InvalidInput as exc:
        return rejection(stage=STAGE, reason=exc.reason, detail=exc.detail,
                         origin=record.origin, raw=record.data, dataset=parser.dataset)
    except Exception as exc:  # a parser bug must not stall its source: keep the record, say why
        log.exception("Parser failed on a record.", extra={"origin": record.origin})
        return rejection(stage=STAGE, reason=Reason.STAGE_ERROR,
                         detail=f"{type(exc).__name__}: {exc}"[:500], origin=record.origin,
                         raw=record.data, dataset=parser.dataset)


class Collector:
    def __init__(self, name: str, source: Source, parser: Parser, producer: Producer,
                 telemetry: Telemetry, max_record_bytes: int, batch_records: int) -> None:
        self.name = name
        self.source = source
        self.parser = parser
        self.producer = producer
        self.telemetry = telemetry
        self.max_record_bytes = max_record_bytes
        self.batch_records = batch_records
        self.counts = CollectCounts()

    def run_once(self) -> int:
        """Collect one batch; returns the records read. Raises EndOfInput at the end."""
        records = self.source.read(self.batch_records)
        accepted = dead = 0
        for record in records:
            outcome = parse_record(self.parser, record, self.max_record_bytes)
            if isinstance(outcome, Rejection):
                self.producer.send(DLQ, key=outcome.key, value=encode(outcome))
                dead += 1
                continue
            for event in outcome:
                self.producer.send(RAW, key=event.key, value=encode(event))
            accepted += len(outcome)
        self.producer.flush()
        self.source.commit(records)
        self.counts.accepted += accepted
        self.counts.dead_lettered += dead
        self.telemetry.record(f"{STAGE}.{self.name}", received=len(records), sent=accepted,
                              dead_lettered=dead)
        return len(records)
