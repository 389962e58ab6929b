"""The stages as a table, and the Pipeline that wires them to a bus, a store and each other.

The same handlers run whether the stages share one process (embedded mode: `ctrail run`,
`ctrail ingest`) or run as separate workers; only the bus behind them differs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Final, Iterable, Sequence

from ctrail.bus import ALERTS, CORRELATE, DLQ, EVENTS, RAW, Bus
from ctrail.bus.codec import Item
from ctrail.components import Parser, Source
from ctrail.errors import Retryable
from ctrail.event import Alert, Event
from ctrail.runtime.collect import Collector
from ctrail.runtime.rule_audit import record_rule_changes
from ctrail.runtime.stage import Handler, Output, StageResult, StageWorker, isolate
from ctrail.runtime.telemetry import Sample, Telemetry
from ctrail.settings import Settings
from detectors.window_state import Checkpoint, CorrelationEngine, StageState, Stateful

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stage:
    """A built stage: its handler, and how to release what the handler holds."""

    handler: Handler
    close: Callable[[], None] = lambda: None
    metrics: Callable[[], Iterable[Sample]] | None = None    # its own figures, for /metrics
    idle: Callable[[], None] | None = None      # called when no input waits (StageWorker)


def enrich_stage(settings: Settings, bus: Bus) -> Stage:
    # The bus carries the entity graph's facts (ctrail.entities): rebuilt from it here.
    enricher = settings.enrich.build(bus)

    def handle(item: Item) -> list[Output]:
        assert isinstance(item, Event)
        event = enricher.enrich(item)
        return [Output(EVENTS, event.key, event)]

    def handle_batch(items: Sequence[Item]) -> StageResult:
        enricher.begin_batch()
        result = isolate("enrich", items, handle)
        enricher.end_batch()          # facts durable before the runner commits the batch
        return result

    def idle() -> None:
        # Facts that arrive without events (the Kubernetes API watcher's, other workers')
        # reach the graph and ctrail.entities now, not with the next event.
        enricher.begin_batch()
        enricher.end_batch()
    return Stage(handle_batch, enricher.close, idle=idle)


def detect_stage(settings: Settings, bus: Bus) -> Stage:
    """Single-event alerts (suppressed by key) to ctrail.alerts; correlation candidates to
    ctrail.correlate, keyed by correlation group, for the correlate stage's windows. A change
    of the rule set since the last start is first recorded in our audit trail."""
    detector = settings.detection.build()
    record_rule_changes(settings, detector, bus)
    window = StageWindows(settings, "detect", None)

    def handle(item: Item) -> list[Output]:
        assert isinstance(item, Event)
        alerts, candidates = detector.detect(item)
        return ([Output(ALERTS, alert.key, alert) for alert in window.admit(alerts)]
                + [Output(CORRELATE, candidate.key, candidate) for candidate in candidates])

    def handle_batch(items: Sequence[Item]) -> StageResult:
        return window.finish(isolate("detect", items, handle), detector.advance)
    return Stage(handle_batch, window.close)


def correlate_stage(settings: Settings) -> Stage:
    """Correlation windows over the candidates of ctrail.correlate (each group's candidates
    reach one worker: the topic is keyed by group), checkpointed in the data dir."""
    correlations = settings.detection.build().correlations.rules
    engine = CorrelationEngine(correlations, settings.detection.late_events_secs)
    window = StageWindows(settings, "correlate", engine)

    def handle(item: Item) -> list[Output]:
        assert isinstance(item, Alert)
        return [Output(ALERTS, alert.key, alert) for alert in window.admit(engine.observe(item))]

    def handle_batch(items: Sequence[Item]) -> StageResult:
        return window.finish(isolate("correlate", items, handle), engine.advance)
    return Stage(handle_batch, window.close)


class StageWindows:
    """A detection stage's state: its correlation windows (if any) and suppression, restored
    from data_dir/detection/<stage>.json and checkpointed there before the runner commits."""

    def __init__(self, settings: Settings, stage: str, engine: CorrelationEngine | None) -> None:
        config = settings.detection.suppression
        self.suppressor = config.build() if config is not None else None
        parts: dict[str, Stateful] = {"suppression": self.suppressor} if self.suppressor else {}
        if engine is not None:
            parts["windows"] = engine
        checkpoint = Checkpoint(settings.data_dir / "detection" / f"{stage}.json")
        self.state = StageState(checkpoint, parts) if parts else None

    def admit(self, alerts: list[Alert]) -> list[Alert]:
        if self.suppressor is None:
            return alerts
        return [passed for alert in alerts for passed in self.suppressor.admit(alert)]

    def finish(self, result: StageResult, advance: Callable[[datetime], list[Alert]]
               ) -> StageResult:
        now = datetime.now(timezone.utc)
        due = self.admit(advance(now)) + (self.suppressor.advance(now) if self.suppressor else [])
        if self.state is None:
            result.outputs.extend(Output(ALERTS, alert.key, alert) for alert in due)
            return result
        alerts = [out.item for out in result.outputs if out.topic == ALERTS]
        others = [out for out in result.outputs if out.topic != ALERTS]
        emitted = self.state.finish([*alerts, *due])     # type: ignore[list-item]
        result.outputs = [*(Output(ALERTS, a.key, a) for a in emitted), *others]
        return result

    def close(self) -> None:
        if self.state is not None:
            self.state.save()


def store_stage(settings: Settings) -> Stage:
    store = settings.store.build(settings.data_dir)
    store.check()

    def handle(items: Sequence[Item]) -> StageResult:
        written = store.write(items)
        if written.retry:
            raise Retryable(f"the store asked to retry {len(written.retry)} items")
        return StageResult(rejected=list(written.rejected))
    return Stage(handle, store.close)


def forward_stage(settings: Settings) -> Stage:
    """Events and alerts to the configured `outputs` (Fluentd), each at least once."""
    sinks = [config.build() for config in settings.outputs.values()]
    for name, sink in zip(settings.outputs, sinks):
        try:
            sink.check()
        except Retryable as exc:    # a receiver that is down now is retried, not fatal
            log.warning("An output is not reachable yet.", extra={"output": name,
                                                                   "error": str(exc)})

    def handle(items: Sequence[Item]) -> StageResult:
        rejected = []
        for sink in sinks:
            written = sink.write(items)
            if written.retry:
                raise Retryable(f"an output asked to retry {len(written.retry)} items")
            rejected.extend(written.rejected)
        return StageResult(rejected=rejected)

    def close() -> None:
        for sink in sinks:
            sink.close()
    return Stage(handle, close)


def notify_stage(settings: Settings) -> Stage:
    """Alerts into the notify outbox (durable before the runner commits them); the sender
    loop that delivers the outbox runs in this process, in a thread of its own."""
    assert settings.notify is not None
    service = settings.notify.build(settings.data_dir)
    service.start()

    def handle(items: Sequence[Item]) -> StageResult:
        service.enqueue(items)        # raises Retryable: the batch stays uncommitted
        return StageResult()
    return Stage(handle, service.close, service.samples)


def evidence_stage(settings: Settings) -> Stage:
    """Events and alerts into the append-only evidence archive (sinks/evidence), durable and
    deduplicated by event id before the runner commits them."""
    from sinks.evidence.archive import EvidenceArchive

    assert settings.evidence is not None
    archive = EvidenceArchive.open_shared(settings.evidence, settings.data_dir)

    def handle(items: Sequence[Item]) -> StageResult:
        archive.write(items)
        return StageResult()
    return Stage(handle, archive.close)


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    consumes: tuple[str, ...]
    build: Callable[..., Stage]       # (settings), or (settings, bus) when uses_bus
    uses_bus: bool = False
    enabled: Callable[[Settings], bool] = lambda _settings: True   # built only when it is


STAGES: Final = (
    StageSpec("enrich", consumes=(RAW,), build=enrich_stage, uses_bus=True),
    StageSpec("detect", consumes=(EVENTS,), build=detect_stage, uses_bus=True),
    StageSpec("correlate", consumes=(CORRELATE,), build=correlate_stage),
    StageSpec("store", consumes=(EVENTS, ALERTS, DLQ), build=store_stage),
    StageSpec("forward", consumes=(EVENTS, ALERTS), build=forward_stage,
              enabled=lambda settings: bool(settings.outputs)),
    StageSpec("evidence", consumes=(EVENTS, ALERTS), build=evidence_stage,
              enabled=lambda settings: settings.evidence is not None),
    StageSpec("notify", consumes=(ALERTS,), build=notify_stage,
              enabled=lambda settings: settings.notify is not None
              and bool(settings.notify.receivers)),
)
STAGE_NAMES: Final = tuple(spec.name for spec in STAGES)


class Pipeline:
    """The selected stages (all by default) on the configured bus, in this process: embedded
    mode runs them all; a distributed worker runs one."""

    def __init__(self, settings: Settings, stages: Sequence[str] = STAGE_NAMES) -> None:
        self.settings = settings
        self.telemetry = Telemetry()
        self.bus = settings.bus.build(settings.data_dir)
        self.stages: list[Stage] = []
        self.workers: list[StageWorker] = []
        batch = settings.pipeline.batch_events
        try:
            for spec in STAGES:
                if spec.name in stages and spec.enabled(settings):
                    stage = (spec.build(settings, self.bus) if spec.uses_bus
                             else spec.build(settings))
                    self.stages.append(stage)
                    if stage.metrics is not None:
                        self.telemetry.add_source(stage.metrics)
                    self.workers.append(StageWorker(
                        spec.name, self.bus.consumer(spec.name, spec.consumes),
                        self.bus.producer(), stage.handler, self.telemetry, batch,
                        stage.idle))
        except BaseException:
            self.close()
            raise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def collector(self, name: str, source: Source, parser: Parser) -> Collector:
        # A source that already judged some records (a forward listener's malformed frames)
        # wraps the parser, so its dead letters take the parse-failure path to the DLQ.
        wrap = getattr(source, "wrap_parser", None)
        parser = wrap(parser) if wrap is not None else parser
        # A listener bounds its records itself (413 above its max_body_bytes): an audit batch
        # it accepted must not then be dead-lettered whole for exceeding the line limit.
        cap = getattr(source, "max_record_bytes", self.settings.pipeline.max_record_bytes)
        return Collector(name, source, parser, self.bus.producer(), self.telemetry, cap,
                         self.settings.pipeline.batch_events)

    def step(self) -> int:
        """One batch through each stage, in this thread; returns the records processed."""
        return sum(worker.run_once(timeout_secs=0) for worker in self.workers)

    def drain(self) -> None:
        """Run the stages until every one has committed everything upstream produced."""
        while self.step() or any(worker.consumer.lag() for worker in self.workers):
            pass

    def wait_processed(self, timeout_secs: float) -> dict[str, int]:
        """Wait until every stage's group (wherever its workers run) has committed all that
        is upstream of it; returns each stage's remaining lag (all 0 unless time ran out).
        Lags are read in stage order, so one pass of zeros means the whole flow is done."""
        watchers = {spec.name: self.bus.consumer(spec.name, spec.consumes) for spec in STAGES
                    if spec.enabled(self.settings)}
        deadline = time.monotonic() + timeout_secs
        try:
            while True:
                lags = {name: watcher.lag() for name, watcher in watchers.items()}
                if not any(lags.values()) or time.monotonic() > deadline:
                    return lags
                time.sleep(0.5)
        finally:
            for watcher in watchers.values():
                watcher.close()

    def start(self) -> None:
        """Each stage in a thread of its own, until stop()."""
        self._stop.clear()
        for worker in self.workers:
            thread = threading.Thread(target=worker.run, args=(self._stop,),
                                      name=f"stage-{worker.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self.stop()
        for worker in self.workers:
            worker.consumer.close()
        for stage in self.stages:
            stage.close()
        self.bus.close()
