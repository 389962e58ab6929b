"""The stages as a table, and the Pipeline that wires them to a bus, a store and each other.

The same handlers run whether the stages share one process (embedded mode: `ctrail run`,
`ctrail ingest`) or run as separate workers; only the bus behind them differs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Final, Sequence

from ctrail.bus import ALERTS, DLQ, EVENTS, RAW
from ctrail.bus.codec import Item
from ctrail.bus.local import LocalBus
from ctrail.components import Detector, Enricher, Parser, Sink, Source
from ctrail.errors import Retryable
from ctrail.event import Event
from ctrail.runtime.collect import Collector
from ctrail.runtime.stage import Handler, Output, StageResult, StageWorker, isolate
from ctrail.runtime.telemetry import Telemetry
from ctrail.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Components:
    enricher: Enricher
    detector: Detector
    store: Sink


def enrich_handler(components: Components) -> Handler:
    def handle(item: Item) -> list[Output]:
        assert isinstance(item, Event)
        event = components.enricher.enrich(item)
        return [Output(EVENTS, event.key, event)]
    return lambda items: isolate("enrich", items, handle)


def detect_handler(components: Components) -> Handler:
    def handle(item: Item) -> list[Output]:
        assert isinstance(item, Event)
        return [Output(ALERTS, alert.key, alert) for alert in components.detector.observe(item)]

    def handle_batch(items: Sequence[Item]) -> StageResult:
        result = isolate("detect", items, handle)
        due = components.detector.advance(datetime.now(timezone.utc))
        result.outputs.extend(Output(ALERTS, alert.key, alert) for alert in due)
        return result
    return handle_batch


def store_handler(components: Components) -> Handler:
    def handle(items: Sequence[Item]) -> StageResult:
        written = components.store.write(items)
        if written.retry:
            raise Retryable(f"the store asked to retry {len(written.retry)} items")
        return StageResult(rejected=list(written.rejected))
    return handle


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    consumes: tuple[str, ...]
    build: Callable[[Components], Handler]


STAGES: Final = (
    StageSpec("enrich", consumes=(RAW,), build=enrich_handler),
    StageSpec("detect", consumes=(EVENTS,), build=detect_handler),
    StageSpec("store", consumes=(EVENTS, ALERTS, DLQ), build=store_handler),
)


class Pipeline:
    """Every stage of embedded mode on the local bus, in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.telemetry = Telemetry()
        self.bus = LocalBus(settings.data_dir / "bus", settings.bus.segment_bytes)
        self.components = Components(enricher=settings.enrich.build(),
                                     detector=settings.detection.build(),
                                     store=settings.store.build(settings.data_dir))
        batch = settings.pipeline.batch_events
        self.workers = [StageWorker(spec.name, self.bus.consumer(spec.name, spec.consumes),
                                    self.bus.producer(), spec.build(self.components),
                                    self.telemetry, batch) for spec in STAGES]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def collector(self, name: str, source: Source, parser: Parser) -> Collector:
        return Collector(name, source, parser, self.bus.producer(), self.telemetry,
                         self.settings.pipeline.max_record_bytes,
                         self.settings.pipeline.batch_events)

    def step(self) -> int:
        """One batch through each stage, in this thread; returns the records processed."""
        return sum(worker.run_once(timeout_secs=0) for worker in self.workers)

    def drain(self) -> None:
        """Run the stages until every one has committed everything upstream produced."""
        while self.step() or any(worker.consumer.lag() for worker in self.workers):
            pass

    def start(self) -> None:
        """Each stage in a thread of its own, until stop()."""
        for worker in self.workers:
            thread = threading.Thread(target=worker.run, args=(self._stop,),
                                      name=f"stage-{worker.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def close(self) -> None:
        self.stop()
        self.components.store.close()
        self.bus.close()

