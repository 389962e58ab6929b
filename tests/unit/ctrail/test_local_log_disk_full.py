"""The local log on a full disk: a failed flush leaves no torn record, tells every producer whose
appends it dropped, and the log carries on when space returns (a real small tmpfs)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from ctrail.bus import EVENTS, RAW
from ctrail.bus.local import LocalBus, read_topic_files
from ctrail.errors import Unavailable
from tests.small_filesystem import fill, free_bytes, small_filesystem


@pytest.fixture
def small_dir(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "fs", 4 * 1024 * 1024) as mounted:
        yield mounted


def values(bus_dir: Path, topic: str) -> list[bytes]:
    return list(read_topic_files(bus_dir / topic))


def test_a_full_disk_fails_the_flush_and_the_log_resumes_when_space_returns(
        small_dir: Path) -> None:
    bus = LocalBus(small_dir / "bus", intake_min_free_bytes=0)
    producer = bus.producer()
    producer.send(EVENTS, "k", b"before")
    producer.flush()
    ballast = fill(small_dir, leave_bytes=0)
    producer.send(EVENTS, "k", b"x" * 300_000)
    with pytest.raises(Unavailable, match="cannot append to ctrail.events"):
        producer.flush()
    # Nothing of the failed write stays: the segment ends at its last whole record.
    segment = next((small_dir / "bus" / EVENTS).glob("*.log"))
    assert segment.stat().st_size == bus.topic(EVENTS).durable_end
    ballast.unlink()
    producer.send(EVENTS, "k", b"after")
    producer.flush()
    consumer = bus.consumer("store", [EVENTS])
    assert [r.value for r in consumer.poll(10, 0)] == [b"before", b"after"]
    bus.close()
    assert values(small_dir / "bus", EVENTS) == [b"before", b"after"]   # as a restart reads it


def test_every_producer_whose_appends_were_dropped_is_told(small_dir: Path) -> None:
    bus = LocalBus(small_dir / "bus", intake_min_free_bytes=0)
    first, second = bus.producer(), bus.producer()
    bus.topic(EVENTS)
    ballast = fill(small_dir, leave_bytes=0)
    first.send(EVENTS, "k", b"a" * 200_000)
    second.send(EVENTS, "k", b"b")
    with pytest.raises(Unavailable):
        first.flush()
    ballast.unlink()
    # second's record went with first's failed write: its own flush must not report success.
    with pytest.raises(Unavailable, match="discarded"):
        second.flush()
    second.send(EVENTS, "k", b"b")
    second.flush()
    assert values(small_dir / "bus", EVENTS) == [b"b"]
    bus.close()


def test_intake_stops_below_its_free_space_threshold_while_other_topics_still_write(
        small_dir: Path) -> None:
    bus = LocalBus(small_dir / "bus", intake_min_free_bytes=1024 * 1024)
    producer = bus.producer()
    bus.topic(RAW), bus.topic(EVENTS)
    fill(small_dir, leave_bytes=512 * 1024)
    producer.send(RAW, "k", b"raw")
    with pytest.raises(Unavailable, match="intake_min_free_bytes"):
        producer.flush()
    producer.send(EVENTS, "k", b"event")          # the chain can still drain what was taken
    producer.flush()
    assert free_bytes(small_dir) > 0
    assert values(small_dir / "bus", RAW) == []
    assert values(small_dir / "bus", EVENTS) == [b"event"]
    bus.close()


def test_a_committed_offset_that_cannot_be_saved_is_retryable(small_dir: Path) -> None:
    bus = LocalBus(small_dir / "bus", intake_min_free_bytes=0)
    producer = bus.producer()
    producer.send(EVENTS, "k", b"one")
    producer.flush()
    consumer = bus.consumer("store", [EVENTS])
    records = consumer.poll(10, 0)
    ballast = fill(small_dir, leave_bytes=0)
    with pytest.raises(Unavailable, match="cannot save the offset"):
        consumer.commit(records)
    assert not list((small_dir / "bus" / EVENTS).glob("*.tmp"))
    ballast.unlink()
    consumer.commit(records)
    assert consumer.lag() == 0
    bus.close()
