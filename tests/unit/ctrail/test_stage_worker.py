"""The stage runner: commit only after output is durable; retry without commit; isolate bugs."""

from __future__ import annotations

import errno
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.bus import DLQ, EVENTS
from ctrail.bus.codec import Item, decode, encode
from ctrail.bus.local import LocalBus
from ctrail.components import RawRecord
from ctrail.errors import Retryable
from ctrail.event import Event, Rejection
from ctrail.runtime.stage import Output, StageResult, StageWorker, isolate
from ctrail.runtime.telemetry import Telemetry

OUT = "test.out"
LINE = (b'{"kind":"Event","auditID":"a","verb":"get","stage":"ResponseComplete",'
        b'"requestReceivedTimestamp":"2026-01-01T00:00:00Z"}')


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalBus]:
    bus = LocalBus(tmp_path / "bus")
    producer = bus.producer()
    for i in range(3):
        event = K8sAuditParser().parse(RawRecord(LINE.replace(b'"a"', f'"{i}"'.encode()), "t",
                                                 datetime.now(timezone.utc)))[0]
        producer.send(EVENTS, key=event.key, value=encode(event))
    producer.flush()
    yield bus
    bus.close()


def passthrough(items: Sequence[Item]) -> StageResult:
    return StageResult(outputs=[Output(OUT, item.key, item) for item in items])


def test_a_batch_is_published_then_committed(bus: LocalBus) -> None:
    worker = StageWorker("enrich", bus.consumer("enrich", [EVENTS]), bus.producer(), passthrough,
                         Telemetry())
    assert worker.run_once(timeout_secs=0) == 3
    assert worker.consumer.lag() == 0
    assert len(bus.consumer("check", [OUT]).poll(10, timeout_secs=0)) == 3
    assert worker.telemetry.stages["enrich"].sent == 3


def test_a_retryable_failure_commits_nothing_and_the_batch_comes_back(bus: LocalBus) -> None:
    calls = []

    def flaky(items: Sequence[Item]) -> StageResult:
        calls.append(len(items))
        if len(calls) == 1:
            raise Retryable("store is down")
        return passthrough(items)

    worker = StageWorker("store", bus.consumer("store", [EVENTS]), bus.producer(), flaky, Telemetry())
    with pytest.raises(Retryable):
        worker.run_once(timeout_secs=0)
    assert worker.consumer.lag() > 0
    worker.consumer.rewind()
    assert worker.run_once(timeout_secs=0) == 3
    assert calls == [3, 3]


def test_an_item_that_breaks_the_handler_is_dead_lettered_and_the_rest_go_on(bus: LocalBus) -> None:
    def buggy(item: Item) -> list[Output]:
        assert isinstance(item, Event)
        if item.kubernetes and item.kubernetes.audit and item.kubernetes.audit["auditID"] == "1":
            raise KeyError("surprise")
        return [Output(OUT, item.key, item)]

    def handler(items: Sequence[Item]) -> StageResult:
        rejected: list[Rejection] = []
        outputs = isolate("enrich", items, buggy, rejected)
        return StageResult([out for outs in outputs for out in outs], rejected)

    worker = StageWorker("enrich", bus.consumer("enrich", [EVENTS]), bus.producer(), handler,
                         Telemetry())
    assert worker.run_once(timeout_secs=0) == 3
    assert len(bus.consumer("check", [OUT]).poll(10, timeout_secs=0)) == 2
    (dead,) = bus.consumer("check", [DLQ]).poll(10, timeout_secs=0)
    rejection = decode(DLQ, dead.value)
    assert rejection.reason == "stage_error" and "KeyError" in rejection.detail
    assert '"auditID":"1"' in rejection.original


def test_a_record_that_does_not_decode_is_dead_lettered(bus: LocalBus) -> None:
    producer = bus.producer()
    producer.send(EVENTS, key="x", value=b'{"not": "an event"}')
    producer.flush()
    worker = StageWorker("enrich", bus.consumer("enrich", [EVENTS]), bus.producer(), passthrough,
                         Telemetry())
    assert worker.run_once(timeout_secs=0) == 4
    (dead,) = bus.consumer("check", [DLQ]).poll(10, timeout_secs=0)
    assert decode(DLQ, dead.value).reason == "undecodable"


def test_a_full_disk_inside_a_stage_is_waited_out_not_the_end_of_its_thread(
        bus: LocalBus) -> None:
    calls = []

    def checkpoint_on_full_disk(items: Sequence[Item]) -> StageResult:
        calls.append(len(items))
        if len(calls) == 1:                 # a window checkpoint's write_atomic, say
            raise OSError(errno.ENOSPC, "No space left on device")
        return passthrough(items)

    telemetry = Telemetry()
    worker = StageWorker("process", bus.consumer("process", [EVENTS]), bus.producer(),
                         checkpoint_on_full_disk, telemetry)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        for _ in range(100):
            if worker.consumer.lag() == 0:
                break
            stop.wait(0.05)
        assert worker.consumer.lag() == 0 and calls == [3, 3] and thread.is_alive()
        assert telemetry.failing() == []
    finally:
        stop.set()
        thread.join()
