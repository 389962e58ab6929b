"""StageWorker: poll → handle → publish → flush → commit, the same loop on every bus.

A stage's handler turns a batch of decoded items into outputs (items for the next topic) and
rejections (dead letters). The worker publishes both, waits until they are durable, and only
then commits its input, so a crash at any point redelivers rather than loses. A handler raising
Retryable leaves the batch uncommitted: the worker rewinds and tries again after a backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

from ctrail.bus import ALERTS, DLQ, Consumer, Producer, Record
from ctrail.bus.codec import Item, RawEntry, decode, encode
from ctrail.durable import is_disk_full
from ctrail.errors import InvalidInput, Reason, Retryable
from ctrail.event import Alert, Rejection
from ctrail.runtime.deadletter import rejection
from ctrail.runtime.telemetry import Telemetry

log = logging.getLogger(__name__)
MAX_BACKOFF_SECS = 30.0
LAG_EVERY_SECS = 15.0


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: str
    item: Item


@dataclass(slots=True)
class StageResult:
    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


Handler = Callable[[Sequence[Item | RawEntry]], StageResult]
I = TypeVar("I", bound=Item)
T = TypeVar("T")


def isolate(step: str, items: Sequence[I], apply: Callable[[I], T],
            rejected: list[Rejection]) -> list[T]:
    """apply() to each item; an item it fails on is dead-lettered alone (into `rejected`), not
    its batch. Retryable is raised: the whole batch is tried again."""
    results: list[T] = []
    for item in items:
        try:
            results.append(apply(item))
        except Retryable:
            raise
        except InvalidInput as exc:
            rejected.append(_reject_item(step, item, exc.reason, exc.detail))
        except Exception as exc:  # a bug must not stall the pipeline: keep the item, say why
            log.exception("A step failed on an item.", extra={"step": step})
            rejected.append(_reject_item(step, item, Reason.STAGE_ERROR,
                                         f"{type(exc).__name__}: {exc}"))
    return results


def _reject_item(step: str, item: Item, reason: Reason, detail: str) -> Rejection:
    return rejection(stage=step, reason=reason, detail=detail, origin=f"{step} {item.key}",
                     raw=encode(item), dataset=getattr(getattr(item, "event", None), "dataset", None))


class StageWorker:
    def __init__(self, name: str, consumer: Consumer, producer: Producer, handler: Handler,
                 telemetry: Telemetry, batch_size: int = 1000,
                 idle: Callable[[], StageResult | None] | None = None,
                 batch_bytes: int | None = None) -> None:
        self.name = name
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.telemetry = telemetry
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        # Work of the stage's own, done when no input waits; its result is published.
        self.idle = idle

    def run_once(self, timeout_secs: float = 1.0) -> int:
        """Process one batch; returns how many records it consumed (0 when idle)."""
        records = self.consumer.poll(self.batch_size, timeout_secs=timeout_secs,
                                     max_bytes=self.batch_bytes)
        if not records:
            due = self.idle() if self.idle is not None else None
            if due is not None and (due.outputs or due.rejected):
                self._publish(due, [])            # what became due as time moved
            return 0
        items, undecodable = self._decode(records)
        result = self.handler(items)
        self._publish(result, undecodable)
        self.consumer.commit(records)
        self.telemetry.record(self.name, received=len(records))
        return len(records)

    def _publish(self, result: StageResult, undecodable: list[Rejection]) -> None:
        for out in result.outputs:
            self.producer.send(out.topic, key=out.key, value=encode(out.item))
        dead = [*undecodable, *result.rejected]
        for dead_letter in dead:
            self.producer.send(DLQ, key=dead_letter.key, value=encode(dead_letter))
        self.producer.flush()                     # durable before we let go of the input
        self.telemetry.record(self.name, sent=len(result.outputs), dead_lettered=len(dead))
        self.telemetry.count_alerts((out.item.rule.id, out.item.alert.severity)
                                    for out in result.outputs
                                    if out.topic == ALERTS and isinstance(out.item, Alert))

    def _decode(self, records: Sequence[Record]) -> tuple[list[Item | RawEntry], list[Rejection]]:
        items: list[Item | RawEntry] = []
        undecodable: list[Rejection] = []
        for record in records:
            try:
                items.append(decode(record.topic, record.value))
            except InvalidInput as exc:
                undecodable.append(rejection(stage=self.name, reason=exc.reason, detail=exc.detail,
                                             origin=f"{record.topic}@{record.offset}",
                                             raw=record.value, dataset=None))
        return items, undecodable

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set, backing off on Retryable without committing."""
        backoff = 0.5
        lag_due = 0.0
        while not stop.is_set():
            try:
                self.run_once()
                backoff = 0.5
                self.telemetry.set_failing(self.name, False)
                if time.monotonic() >= lag_due:      # from this thread: consumers are not shared
                    self.telemetry.set_lag(self.name, self.consumer.lag())
                    lag_due = time.monotonic() + LAG_EVERY_SECS
            except (Retryable, OSError) as exc:
                if isinstance(exc, OSError) and not is_disk_full(exc):
                    raise
                # A full disk anywhere in the stage (a window checkpoint, not only the bus or
                # the store) is waited out like any dependency, not the end of the thread.
                log.warning("Stage will retry.", extra={"stage": self.name, "error": str(exc),
                                                        "backoff_secs": backoff})
                self.telemetry.record(self.name, retries=1)
                self.telemetry.set_failing(self.name, True)
                self.consumer.rewind()
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)
