"""The intake spool's backlog figures (ctrail_intake_spool_* in /metrics), on the spool itself.

The spool is driven without Kafka: it ships to a second local log, a real Bus, in another
directory. What must hold: the records and bytes of every flushed append count until the
forwarder commits them, then nothing does; an append a failed flush discarded never counts; a
spool an earlier run left is counted from its segments when opened; the age is that of the
oldest unshipped record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ctrail.bus import DLQ, RAW
from ctrail.bus.intake_spool import DIRECTORY, IntakeSpool, SpoolBacklog
from ctrail.bus.local import HEADER, LocalBus
from ctrail.errors import Unavailable
from tests.waiting import wait_for

KEY = "stream-1"


def frame_bytes(values: list[bytes]) -> int:
    return sum(HEADER.size + len(KEY) + len(value) for value in values)


def shipped(target: Path) -> list[bytes]:
    bus = LocalBus(target)
    try:
        return [r.value for topic in (RAW, DLQ)
                for r in bus.consumer("check", [topic]).poll(100_000, 0.0)]
    finally:
        bus.close()


def spool_in(tmp_path: Path, target: LocalBus, min_free_bytes: int = 0) -> IntakeSpool:
    return IntakeSpool(tmp_path / DIRECTORY, target, min_free_bytes)


def test_flushed_appends_count_until_shipped_and_then_nothing_does(tmp_path: Path) -> None:
    target = LocalBus(tmp_path / "kafka-stand-in")
    spool = spool_in(tmp_path, target)
    try:
        assert spool.backlog() == SpoolBacklog(0, 0, None)
        producer = spool.producer()
        raw = [f"raw {n}".encode() * (n + 1) for n in range(7)]
        dead = [b"a dead letter"]
        for value in raw:
            producer.send(RAW, KEY, value)
        assert spool.backlog().records == 0               # not durable, not acknowledged
        before = time.time()
        producer.flush()
        for value in dead:
            producer.send(DLQ, KEY, value)
        producer.flush()
        backlog = spool.backlog()
        assert (backlog.records, backlog.bytes) == (8, frame_bytes(raw + dead))
        assert backlog.oldest_at is not None and before <= backlog.oldest_at <= time.time()
        samples = {s.name: s.value for s in backlog.samples(backlog.oldest_at + 12.5)}
        assert samples == {"intake_spool_records": 8, "intake_spool_bytes": backlog.bytes,
                           "intake_spool_oldest_record_age_seconds": 12.5}

        spool.start()
        wait_for(lambda: spool.backlog() == SpoolBacklog(0, 0, None), timeout=20)
        target.close()
        assert shipped(tmp_path / "kafka-stand-in") == raw + dead
        assert {s.name: s.value for s in spool.samples()}[
            "intake_spool_oldest_record_age_seconds"] == 0
    finally:
        spool.close()


def test_an_append_a_failed_flush_discarded_never_counts(tmp_path: Path) -> None:
    target = LocalBus(tmp_path / "kafka-stand-in")
    spool = spool_in(tmp_path, target, min_free_bytes=2 ** 60)   # every append refused
    try:
        producer = spool.producer()
        producer.send(RAW, KEY, b"refused")
        with pytest.raises(Unavailable, match="intake_min_free_bytes"):
            producer.flush()
        assert spool.backlog() == SpoolBacklog(0, 0, None)
    finally:
        spool.close()
        target.close()


def test_a_spool_left_by_an_earlier_run_is_counted_when_opened(tmp_path: Path) -> None:
    target = LocalBus(tmp_path / "kafka-stand-in")
    left = spool_in(tmp_path, target)                       # never started: nothing shipped
    producer = left.producer()
    values = [f"left {n}".encode() for n in range(25)]
    for value in values:
        producer.send(RAW, KEY, value)
    producer.flush()
    left.close()
    time.sleep(0.05)

    spool = spool_in(tmp_path, target)
    try:
        fresh = spool.producer()
        fresh.send(RAW, KEY, b"this run")
        fresh.flush()
        backlog = spool.backlog()
        assert (backlog.records, backlog.bytes) == (26, frame_bytes([*values, b"this run"]))
        # Dated by the segment's last write: no later than the earlier run's last append.
        assert backlog.oldest_at is not None and backlog.oldest_at < time.time() - 0.04
        spool.start()
        wait_for(lambda: spool.backlog() == SpoolBacklog(0, 0, None), timeout=20)
    finally:
        spool.close()
        target.close()
