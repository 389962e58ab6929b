"""Intake: raw records from a source onto ctrail.raw, as they are, then the source's ack.

Intake does nothing per event: parsing, enrichment, detection and storage run in the
processing chain (ctrail.runtime.chain), in its own thread or process, so a burst is absorbed
by the raw log instead of by the sender. The one exception is secrets: a record that may hold
one (a byte test, false for Metadata-level audit events) is redacted before it is appended,
so the raw log, like every other file, never holds a clear secret. A source's records are committed (a file checkpoint
saved, a webhook client answered) only after they are durable on the bus.

Only what can never be parsed is judged here: a record the reader had to cut at
max_record_bytes, or one its source already found malformed (a bad forward frame). Its dead
letter (under the parse step's name, as parse failures always have) travels on ctrail.raw too,
so intake writes one topic only: in `ctrail run` it is another process than the chain's, and a
topic of the local log has one writer.
"""

from __future__ import annotations

import logging

from collector import build_parser
from ctrail.bus import RAW, Producer
from ctrail.bus.codec import DEAD_LETTER_FORMAT, RawEntry, encode
from ctrail.components import Parser, RawRecord, Source
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event, Rejection
from ctrail.runtime.deadletter import rejection
from ctrail.runtime.telemetry import Telemetry
from ctrail.settings import Settings

STAGE = "collect"           # the parse step's name in dead letters and in `dlq replay`
log = logging.getLogger(__name__)


def parse_record(parser: Parser, record: RawRecord) -> list[Event | Rejection] | Rejection:
    """Events (and dead letters of bad parts) from one record, or the dead letter that keeps
    the whole record."""
    judged = judged_at_intake(record, parser)
    if judged is not None:
        return judged
    try:
        return list(parser.parse(record))
    except InvalidInput as exc:
        return rejection(stage=STAGE, reason=exc.reason, detail=exc.detail,
                         origin=record.origin, raw=record.data, dataset=parser.dataset,
                         redact=parser.redact_text)
    except Exception as exc:  # a parser bug must not stall its source: keep the record, say why
        log.exception("Parser failed on a record.", extra={"origin": record.origin})
        return rejection(stage=STAGE, reason=Reason.STAGE_ERROR,
                         detail=f"{type(exc).__name__}: {exc}"[:500], origin=record.origin,
                         raw=record.data, dataset=parser.dataset, redact=parser.redact_text)


def judged_at_intake(record: RawRecord, parser: Parser) -> Rejection | None:
    """The dead letter of a record that can never parse (cut, or judged by its source), its
    secrets hashed by `parser`'s redactor."""
    if record.rejected is None and not record.truncated:
        return None
    reason, detail = ((record.rejected.reason, record.rejected.detail) if record.rejected
                      else (Reason.RECORD_TOO_LARGE,
                            f"record exceeds max_record_bytes ({len(record.data)})"))
    return rejection(stage=STAGE, reason=reason, detail=detail, origin=record.origin,
                     raw=record.data, dataset=parser.dataset, redact=parser.redact_text)


class Collector:
    """One source's intake: read a batch, scrub it, append it to ctrail.raw, flush, commit the
    source.

    `format` names the parser the chain will use (a `--source` name); that parser scrubs
    secrets before anything is written (Parser.scrub) and names the dataset of the dead letters
    of records judged here."""

    def __init__(self, name: str, source: Source, format: str, parser: Parser,
                 producer: Producer, telemetry: Telemetry, batch_records: int) -> None:
        self.name = name
        self.source = source
        self.format = format
        self.parser = parser
        self.producer = producer
        self.telemetry = telemetry
        self.batch_records = batch_records

    def run_once(self) -> int:
        """Take in one batch; returns the records read. Raises EndOfInput at the end."""
        records = self.source.read(self.batch_records)
        for record in records:
            judged = judged_at_intake(record, self.parser)
            entry = (RawEntry(self.format, self.name, record.origin, record.received,
                              self.parser.scrub(record.data)) if judged is None
                     else RawEntry(DEAD_LETTER_FORMAT, self.name, record.origin, record.received,
                                   encode(judged)))
            # Keyed by stream: on Kafka one file's (one container's) records stay in order on
            # one partition, and different streams spread over the partitions.
            self.producer.send(RAW, key=record.stream or self.name, value=entry.encode())
        self.producer.flush()
        self.source.commit(records)
        self.telemetry.record(f"{STAGE}.{self.name}", received=len(records))
        return len(records)


def collector_for(settings: Settings, name: str, source: Source, format: str,
                  producer: Producer, telemetry: Telemetry) -> Collector:
    """Intake for `source`, whose records the chain parses as `format` (a --source name)."""
    parser = build_parser(format, settings.data_dir, settings.redaction)
    return Collector(name, source, format, parser, producer, telemetry,
                     settings.pipeline.batch_events)
