"""The stages as a table, and the Pipeline that wires them to a bus, a store and each other.

The same handlers run whether the stages share one process (embedded mode: `ctrail run`,
`ctrail ingest`) or run as separate workers; only the bus behind them differs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Final, Iterable, Sequence

from ctrail.bus import ALERTS, CORRELATE, DLQ, EVENTS, RAW, Bus
from ctrail.bus.codec import Item, RawEntry, encode
from ctrail.components import Source, Store
from ctrail.errors import Retryable
from ctrail.event import Alert, Rejection
from ctrail.runtime.chain import Chain
from ctrail.runtime.collect import Collector, collector_for
from ctrail.runtime.rule_audit import record_rule_changes
from ctrail.runtime.self_watch import SelfWatch, checkpoint_path
from ctrail.runtime.stage import Handler, Output, StageResult, StageWorker, isolate
from ctrail.runtime.telemetry import Sample, Telemetry
from ctrail.settings import Settings
from detectors.history_engine import history_engine
from detectors.history_replay import backfill
from detectors.sigma_detector import SigmaDetector
from detectors.stage_windows import StageWindows
from detectors.window_state import Checkpoint, CorrelationEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stage:
    """A built stage: its handler, and how to release what the handler holds."""

    handler: Handler
    close: Callable[[], None] = lambda: None
    metrics: Callable[[], Iterable[Sample]] | None = None    # its own figures, for /metrics
    # Called when no input waits (StageWorker); what it returns is published like a batch's.
    idle: Callable[[], StageResult | None] | None = None


def process_stage(ctx: "BuildContext") -> Stage:
    """The fused chain (ctrail.runtime.chain): ctrail.raw parsed, enriched, detected, stored.
    A change of the rule set since the last start is first recorded in our audit trail."""
    settings = ctx.settings
    # The bus carries the entity graph's facts (ctrail.entities): rebuilt from it here.
    enricher = settings.enrich.build(ctx.bus)
    try:
        detector = ctx.detector()
        record_rule_changes(settings, detector, ctx.bus)
        chain = Chain(settings, enricher, detector, ctx.store(), ctx.telemetry,
                      ctx.watch.heard if ctx.watch is not None else None)
    except BaseException:
        enricher.close()
        raise

    def idle() -> None:
        # Facts that arrive without events (the Kubernetes API watcher's, other workers')
        # reach the graph and ctrail.entities now, not with the next event.
        enricher.begin_batch()
        enricher.end_batch()

    def close() -> None:
        chain.close()
        enricher.close()
    return Stage(chain, close, idle=idle)


def correlate_stage(ctx: "BuildContext") -> Stage:
    """Correlation windows over the candidates of ctrail.correlate (each group's candidates
    reach one worker: the topic is keyed by group), checkpointed in the data dir."""
    settings = ctx.settings
    engine = CorrelationEngine(ctx.detector().correlations.rules,
                               settings.detection.late_events_secs)
    history = history_engine(ctx.detector(), settings.detection)
    windows = StageWindows(settings.detection.suppression, settings.data_dir, "correlate",
                           engine, history)
    if history.unlearned and settings.detection.history_rules.backfill:
        backfill(history, ctx.detector(), ctx.store(), sorted(history.unlearned))

    def observe(item: Item) -> list[Alert]:
        assert isinstance(item, Alert)
        if history.handles(item):
            return windows.admit(history.observe(item))
        return windows.admit(engine.observe(item))

    def advance(now: datetime) -> list[Alert]:
        return engine.advance(now) + history.advance(now)

    def handle(items: Sequence[Item | RawEntry]) -> StageResult:
        rejected: list[Rejection] = []
        found = isolate("correlate", items, observe, rejected)  # type: ignore[arg-type, type-var]
        alerts = windows.finish([a for alerts in found for a in alerts], advance)
        return StageResult([Output(ALERTS, alert.key, alert) for alert in alerts], rejected)
    # With no input, event time still moves with the wall clock (CorrelationEngine.watermark):
    # absence windows close and their alerts go out without waiting for the next candidate.
    return Stage(handle, windows.close, idle=lambda: handle([]))


def store_stage(ctx: "BuildContext") -> Stage:
    """Correlation alerts and dead letters into the store. The chain stores its events and
    its own alerts itself; meeting those alerts again here, the store keeps them once, by id."""
    store = ctx.store()

    def handle(items: Sequence[Item]) -> StageResult:
        written = store.write(items)
        if written.retry:
            raise Retryable(f"the store asked to retry {len(written.retry)} items")
        return StageResult(rejected=list(written.rejected))
    return Stage(handle)  # type: ignore[arg-type]  # its topics carry no RawEntry


def forward_stage(ctx: "BuildContext") -> Stage:
    """Events and alerts to the configured `outputs` (Fluentd), each at least once."""
    settings = ctx.settings
    sinks = [config.build() for config in settings.outputs.values()]
    for name, sink in zip(settings.outputs, sinks):
        try:
            sink.check()
        except Retryable as exc:    # a receiver that is down now is retried, not fatal
            log.warning("An output is not reachable yet.", extra={"output": name,
                                                                   "error": str(exc)})

    def handle(items: Sequence[Item]) -> StageResult:
        rejected: list[Rejection] = []
        for sink in sinks:
            written = sink.write(items)
            if written.retry:
                raise Retryable(f"an output asked to retry {len(written.retry)} items")
            rejected.extend(written.rejected)
        return StageResult(rejected=rejected)

    def close() -> None:
        for sink in sinks:
            sink.close()
    return Stage(handle, close)  # type: ignore[arg-type]  # its topics carry no RawEntry


def notify_stage(ctx: "BuildContext") -> Stage:
    """Alerts into the notify outbox (durable before the runner commits them); the sender
    loop that delivers the outbox runs in this process, in a thread of its own."""
    settings = ctx.settings
    assert settings.notify is not None
    service = settings.notify.build(settings.data_dir)
    service.start()

    def handle(items: Sequence[Item]) -> StageResult:
        service.enqueue(items)        # raises Retryable: the batch stays uncommitted
        return StageResult()
    return Stage(handle, service.close, service.samples)  # type: ignore[arg-type]  # its topics carry no RawEntry


def evidence_stage(ctx: "BuildContext") -> Stage:
    """Events and alerts into the append-only evidence archive (sinks/evidence), durable and
    deduplicated by event id before the runner commits them."""
    from sinks.evidence.archive import EvidenceArchive

    settings = ctx.settings
    assert settings.evidence is not None
    archive = EvidenceArchive.open_shared(settings.evidence, settings.data_dir)

    def handle(items: Sequence[Item]) -> StageResult:
        archive.write(items)
        return StageResult()
    return Stage(handle, archive.close)  # type: ignore[arg-type]  # its topics carry no RawEntry


@dataclass
class BuildContext:
    """What the stages of one process share: one detector (the rule files are read and
    compiled once per start, whichever stages need them) and one store connection."""

    settings: Settings
    bus: Bus
    telemetry: Telemetry
    watch: SelfWatch | None = None              # the pipeline's own rules (CT-OPS-*)
    _detector: SigmaDetector | None = None
    _store: Store | None = None

    def detector(self) -> SigmaDetector:
        if self._detector is None:
            self._detector = self.settings.detection.build()
        return self._detector

    def store(self) -> Store:
        if self._store is None:
            store = self.settings.store.build(self.settings.data_dir)
            store.check()
            self._store = store
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    consumes: tuple[str, ...]
    build: Callable[[BuildContext], Stage]
    enabled: Callable[[Settings], bool] = lambda _settings: True   # built only when it is


STAGES: Final = (
    StageSpec("process", consumes=(RAW,), build=process_stage),
    StageSpec("correlate", consumes=(CORRELATE,), build=correlate_stage),
    StageSpec("store", consumes=(ALERTS, DLQ), build=store_stage),
    StageSpec("forward", consumes=(EVENTS, ALERTS), build=forward_stage,
              enabled=lambda settings: bool(settings.outputs)),
    StageSpec("evidence", consumes=(EVENTS, ALERTS), build=evidence_stage,
              enabled=lambda settings: settings.evidence is not None),
    StageSpec("notify", consumes=(ALERTS,), build=notify_stage,
              enabled=lambda settings: settings.notify is not None
              and bool(settings.notify.receivers)),
)
STAGE_NAMES: Final = tuple(spec.name for spec in STAGES)
# Stages of earlier releases that the chain now runs, for a clear word to their users.
FUSED_INTO_PROCESS: Final = ("enrich", "detect")


def _tune_gc() -> None:
    """What the stages built (compiled rules, the entity graph) lives as long as the process:
    frozen, the collector never scans it again. A batch allocates tens of thousands of objects
    that die with it; collecting every 700 allocations (the default) cost ~12% of ingest time
    in full collections of long-lived objects (measured), for no memory back."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Pipeline:
    """The selected stages (all by default) on the configured bus, in this process: embedded
    mode runs them all; a distributed worker runs one."""

    def __init__(self, settings: Settings, stages: Sequence[str] = STAGE_NAMES,
                 intake_elsewhere: bool = False) -> None:
        """`intake_elsewhere`: another process appends ctrail.raw (`ctrail run`'s intake,
        ctrail.runtime.intake); this one only reads it."""
        unknown = set(stages) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"no stage {', '.join(sorted(unknown))}; stages: {STAGE_NAMES}")
        self.settings = settings
        self.telemetry = Telemetry()
        self.bus = settings.bus.build(settings.data_dir)
        if intake_elsewhere:
            self.bus.written_elsewhere(RAW)
        self.stages: list[Stage] = []
        self.workers: list[StageWorker] = []
        batch = settings.pipeline.batch_events
        self.watch = self._self_watch(stages) if settings.watch.enabled else None
        self.context = BuildContext(settings, self.bus, self.telemetry, self.watch)
        try:
            for spec in STAGES:
                if spec.name in stages and spec.enabled(settings):
                    stage = spec.build(self.context)
                    self.stages.append(stage)
                    if stage.metrics is not None:
                        self.telemetry.add_source(stage.metrics)
                    self.workers.append(StageWorker(
                        spec.name, self.bus.consumer(spec.name, spec.consumes),
                        self.bus.producer(), stage.handler, self.telemetry, batch,
                        stage.idle, settings.pipeline.batch_bytes))
        except BaseException:
            self.close()
            raise
        _tune_gc()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _self_watch(self, stages: Sequence[str]) -> SelfWatch:
        producer = self.bus.producer()

        def publish(alerts: list[Alert]) -> None:
            for alert in alerts:
                producer.send(ALERTS, key=alert.key, value=encode(alert))
            producer.flush()
            self.telemetry.count_alerts((a.rule.id, a.alert.severity) for a in alerts)
        return SelfWatch(self.settings.watch, self.telemetry,
                         Checkpoint(checkpoint_path(self.settings.data_dir, stages)), publish,
                         sources=set(self.settings.sources), sole_reader=self._sole_reader)

    def _sole_reader(self) -> bool:
        """Whether this process alone processes ctrail.raw (the self-watch's silence)."""
        return self.bus.single_process or self.bus.group_members("process") <= 1

    def collector(self, name: str, source: Source, format: str) -> Collector:
        """Intake for `source` in this process, whose records the chain parses as `format`."""
        return collector_for(self.settings, name, source, format, self.bus.producer(),
                             self.telemetry)

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
        if self.watch is not None:
            thread = threading.Thread(target=self.watch.run, args=(self._stop,),
                                      name="self-watch", daemon=True)
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
        if hasattr(self, "context"):
            self.context.close()
        self.bus.close()
