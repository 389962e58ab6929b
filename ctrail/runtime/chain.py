"""The processing chain: parse → enrich → detect → store over one batch of ctrail.raw.

Fused, as Flink chains operators in one task: each event is decoded once (by its parser, at the
edge) and handed from step to step as the same object, with no encode, log append or fsync
between steps. The chain writes its events to the store itself; the StageWorker commits the
batch's raw position only after that write and the chain's outputs are durable, so a kill -9
anywhere redelivers the batch, and the store (idempotent by event id) keeps each event once.

Topics remain only where the key changes or another process needs the items:
- ctrail.correlate: correlation candidates, keyed by group (the correlate stage's windows);
- ctrail.alerts: alerts, for the store, notify, evidence and forward stages;
- ctrail.dlq: what a step rejected (stored by the store stage; `dlq replay` reads verdicts);
- ctrail.events: the stored events, only when the evidence archive or an output needs them.

The chain stores the alerts it raised in the same write as the batch's events (events first:
an alert refers to its stored event), so an alert is searchable when its event is, without the
hop through ctrail.alerts to the store stage (which stores correlation alerts and dead letters,
and finds the chain's already there by id). Detection therefore runs before the write: a write
that asks to retry has the batch detected again, as a redelivery after a kill -9 would (alert
ids are deterministic; suppression and correlation count a redelivered id once).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Sequence

from collector import build_parser
from ctrail.bus import ALERTS, CORRELATE, DLQ, EVENTS
from ctrail.bus.codec import DEAD_LETTER_FORMAT, EVENT_FORMAT, RawEntry, decode
from ctrail.components import Parser, RawRecord, Store
from ctrail.errors import InvalidInput, Reason, Retryable
from ctrail.event import Alert, Event, Rejection
from ctrail.runtime.collect import STAGE as PARSE_STEP, parse_record
from ctrail.runtime.deadletter import rejection
from ctrail.runtime.stage import Output, StageResult, isolate
from ctrail.runtime.telemetry import Telemetry
from ctrail.settings import Settings
from detectors.sigma_detector import SigmaDetector
from detectors.stage_windows import StageWindows
from enrich import GraphEnricher

log = logging.getLogger(__name__)
Heard = Callable[[str, datetime, datetime | None], None]
# The chain's steps, as dead letters name them (and `dlq replay` gives their items back).
ENRICH, DETECT, STORE = "enrich", "detect", "store"
# The RawEntry.source of records `dlq replay` gives back (ctrail.runtime.replay).
REPLAYED = "replay"
CHAIN_STEPS = (PARSE_STEP, ENRICH, DETECT, STORE)


class Parsers:
    """Each `--source` format's parser, built on first use (one per process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, Parser] = {}

    def __call__(self, name: str) -> Parser:
        parser = self._built.get(name)
        if parser is None:
            parser = build_parser(name, self.settings.data_dir, self.settings.redaction)
            self._built[name] = parser
        return parser


class Chain:
    """The handler of the `process` stage (see the module docstring)."""

    def __init__(self, settings: Settings, enricher: GraphEnricher, detector: SigmaDetector,
                 store: Store, telemetry: Telemetry, heard: Heard | None = None) -> None:
        """`heard`: told, once per batch and configured source, when its newest record
        arrived and its newest event's time (CT-OPS-001, ctrail.runtime.self_watch)."""
        self.parsers = Parsers(settings)
        self.heard = heard
        self.watched = frozenset(settings.sources)
        self.enricher = enricher
        self.detector = detector
        self.windows = StageWindows(settings.detection.suppression, settings.data_dir,
                                    DETECT, None)
        self.store = store
        self.telemetry = telemetry
        # Stored events travel on only where a consumer of ctrail.events is configured.
        self.publish_events = settings.evidence is not None or bool(settings.outputs)

    def __call__(self, entries: Sequence[object]) -> StageResult:
        rejected: list[Rejection] = []
        events = self._parse(entries, rejected)
        self.enricher.begin_batch()
        events = isolate(ENRICH, events, self.enricher.enrich, rejected)
        self.enricher.end_batch()          # facts durable before the runner commits
        outputs = [Output(EVENTS, event.key, event) for event in events] \
            if self.publish_events else []
        alerts: list[Alert] = []
        for found, candidates in isolate(DETECT, events, self.detector.detect, rejected):
            alerts.extend(self.windows.admit(found))
            outputs.extend(Output(CORRELATE, c.key, c) for c in candidates)
        alerts = self.windows.finish(alerts, self.detector.advance)
        written = self.store.write([*events, *alerts])
        if written.retry:
            raise Retryable(f"the store asked to retry {len(written.retry)} items")
        rejected.extend(written.rejected)
        outputs.extend(Output(ALERTS, alert.key, alert) for alert in alerts)
        return StageResult(outputs, rejected)

    def _parse(self, entries: Sequence[object], rejected: list[Rejection]) -> list[Event]:
        """Each entry decoded once; dead letters for what does not parse. Counted per source
        (what `ctrail ingest` reports, and /metrics' collect.<source>)."""
        events: list[Event] = []
        counts: dict[str, list[int]] = {}
        newest: dict[str, list[datetime | None]] = {}     # source -> [arrival, event time]
        for entry in entries:
            assert isinstance(entry, RawEntry)
            outcome = parse_entry(entry, self.parsers)
            tally = counts.setdefault(entry.source, [0, 0])
            if entry.source in self.watched:
                times = newest.setdefault(entry.source, [entry.received, None])
                times[0] = max(times[0] or entry.received, entry.received)
            if isinstance(outcome, Rejection):
                rejected.append(outcome)
                tally[1] += 1
                continue
            for item in outcome:
                if isinstance(item, Rejection):
                    rejected.append(item)
                    tally[1] += 1
                else:
                    events.append(item)
                    tally[0] += 1
                    if entry.source in self.watched:
                        times[1] = item.timestamp if times[1] is None \
                            else max(times[1], item.timestamp)
        if self.heard is not None:
            for source, (arrival, event_time) in newest.items():
                assert arrival is not None
                self.heard(source, arrival, event_time)
        for source, (parsed, dead) in counts.items():
            self.telemetry.record(f"{PARSE_STEP}.{source}", sent=parsed, dead_lettered=dead)
            if dead:
                log.warning("Records of a batch were dead-lettered.",
                            extra={"source": source, "dead_lettered": dead, "parsed": parsed})
        return events

    def close(self) -> None:
        self.windows.close()


def parse_entry(entry: RawEntry, parser_for: Callable[[str], Parser]
                ) -> list[Event | Rejection] | Rejection:
    """What the chain makes of one ctrail.raw entry: its events (and dead letters of bad
    parts), or the dead letter of the whole record."""
    if entry.format == DEAD_LETTER_FORMAT:            # judged at intake: kept as it is
        try:
            return decode(DLQ, entry.data)  # type: ignore[return-value]
        except InvalidInput as exc:
            return rejection(stage=PARSE_STEP, reason=exc.reason, detail=exc.detail,
                             origin=entry.origin, raw=entry.data, dataset=None)
    if entry.format == EVENT_FORMAT:
        try:
            return [decode(EVENTS, entry.data)]  # type: ignore[list-item]
        except InvalidInput as exc:
            return rejection(stage=PARSE_STEP, reason=exc.reason, detail=exc.detail,
                             origin=entry.origin, raw=entry.data, dataset=None)
    try:
        parser = parser_for(entry.format)
    except KeyError:
        return rejection(stage=PARSE_STEP, reason=Reason.UNDECODABLE,
                         detail=f"no parser for the format {entry.format!r}",
                         origin=entry.origin, raw=entry.data, dataset=None)
    # A collector scrubbed its records at intake; a replayed dead letter may hold bytes that
    # no parser of its format scrubbed (it was ingested with the wrong --source, or judged
    # at intake and redacted as text only), so its parser redacts it now.
    return parse_record(parser, RawRecord(entry.data, entry.origin, entry.received,
                                          scrubbed=entry.source != REPLAYED))
