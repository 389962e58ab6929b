"""Every file ContainerTrail writes, on a full disk (a real small tmpfs): the local log (a failed
flush leaves no torn record, tells every producer whose appends it dropped, and carries on when
space returns), offsets, tail checkpoints, the SQLite store and the notification outbox (the
write is refused as retryable, the file stays whole, the retry succeeds once space is back)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Iterator

import pytest

from collector.tail import FileTail
from ctrail.bus import EVENTS, RAW
from ctrail.bus.local import LocalBus, read_topic_files
from ctrail.errors import Retryable, Unavailable
from sinks.notify.outbox import NewRow, Outbox
from sinks.sqlite.store import SqliteStore
from tests.contract.test_store import EVENTS as STORE_EVENTS
from tests.small_filesystem import fill, free_bytes, small_filesystem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sinks"))
from receivers import make_alert  # noqa: E402 (the sinks tests' alert maker)


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


def test_a_committed_offset_is_saved_in_place_even_on_a_full_disk(small_dir: Path) -> None:
    """An offset is overwritten in place (it takes no new block), so a full disk does not stop
    a group from committing what it has processed, and nothing temporary is left."""
    bus = LocalBus(small_dir / "bus", intake_min_free_bytes=0)
    producer = bus.producer()
    producer.send(EVENTS, "k", b"one")
    producer.flush()
    consumer = bus.consumer("store", [EVENTS])
    records = consumer.poll(10, 0)
    fill(small_dir, leave_bytes=0)
    consumer.commit(records)
    assert not list((small_dir / "bus" / EVENTS).glob("*.tmp"))
    assert bus.consumer("store", [EVENTS]).poll(10, 0) == []        # a restart reads on
    assert int((small_dir / "bus" / EVENTS / "store.offset").read_text()) == records[-1].next_offset
    bus.close()


def test_an_offset_that_cannot_be_written_is_retryable(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    producer = bus.producer()
    producer.send(EVENTS, "k", b"one")
    producer.flush()
    consumer = bus.consumer("store", [EVENTS])
    records = consumer.poll(10, 0)
    offset = tmp_path / "bus" / EVENTS / "store.offset"
    offset.unlink()
    offset.mkdir()                          # an offset the process cannot open for writing
    with pytest.raises(Unavailable, match="cannot save the offset"):
        consumer.commit(records)
    offset.rmdir()
    consumer.commit(records)
    assert consumer.lag() == 0
    bus.close()


def test_a_tail_checkpoint_that_cannot_be_saved_is_retryable_and_reads_on(
        small_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"one\ntwo\nthree\n")
    tail = FileTail(log, small_dir / "ckpt.json", 1024, poll_interval_secs=0)
    records = tail.read(2)
    ballast = fill(small_dir, leave_bytes=0)
    with pytest.raises(Unavailable, match="cannot save the checkpoint"):
        tail.commit(records)
    assert [r.data for r in tail.read(10)] == [b"three"]     # durable already: not again
    ballast.unlink()
    tail.commit([])
    tail.close()
    again = FileTail(log, small_dir / "ckpt.json", 1024, poll_interval_secs=0)
    assert again.read(10) == []
    again.close()


def test_the_sqlite_store_on_a_full_disk_asks_to_retry_and_stays_whole(small_dir: Path) -> None:
    store = SqliteStore(small_dir / "store.sqlite3")
    store.write(STORE_EVENTS[:2])
    ballast = fill(small_dir, leave_bytes=0)
    with pytest.raises(Retryable, match="full"):
        store.write(STORE_EVENTS[2:])
    ballast.unlink()
    store.write(STORE_EVENTS[2:])                          # the stage's retry, space back
    store.close()
    with sqlite3.connect(small_dir / "store.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM events").fetchone() == (len(STORE_EVENTS),)


def test_the_outbox_on_a_full_disk_refuses_the_batch_and_stays_whole(small_dir: Path) -> None:
    outbox = Outbox(small_dir / "outbox.sqlite3")
    outbox.enqueue([NewRow("chat", make_alert(1))], now=0.0)
    ballast = fill(small_dir, leave_bytes=0)
    with pytest.raises(sqlite3.OperationalError, match="full"):     # NotifyService: Retryable
        outbox.enqueue([NewRow("chat", make_alert(i)) for i in range(2, 40)], now=0.0)
    ballast.unlink()
    assert outbox.enqueue([NewRow("chat", make_alert(i)) for i in range(2, 40)], now=0.0) == 38
    assert len(outbox.pending("chat", 100)) == 39
    outbox.close()
    with sqlite3.connect(small_dir / "outbox.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
