"""One suite for every bus: order per key, redelivery of uncommitted records, durability."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from ctrail.bus import ALERTS, RAW, Bus
from ctrail.bus.local import HEADER, LocalBus
from ctrail.errors import Unavailable


@pytest.fixture(params=["local"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    bus = LocalBus(tmp_path / "bus")
    yield bus
    bus.close()


def publish(bus: Bus, topic: str, values: list[bytes], key: str = "k") -> None:
    producer = bus.producer()
    for value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()


def values(records: list) -> list[bytes]:  # type: ignore[type-arg]
    return [r.value for r in records]


def test_records_come_back_in_order_with_their_keys(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b", b"c"], key="ns/pod")
    records = bus.consumer("enrich", [RAW]).poll(10, timeout_secs=0)
    assert values(records) == [b"a", b"b", b"c"]
    assert {r.key for r in records} == {b"ns/pod"}


def test_unflushed_records_are_not_visible(bus: Bus) -> None:
    bus.producer().send(RAW, key="k", value=b"pending")
    assert bus.consumer("enrich", [RAW]).poll(10, timeout_secs=0) == []


def test_uncommitted_records_are_delivered_again_after_rewind(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b"])
    consumer = bus.consumer("enrich", [RAW])
    assert values(consumer.poll(10, timeout_secs=0)) == [b"a", b"b"]
    consumer.rewind()
    assert values(consumer.poll(10, timeout_secs=0)) == [b"a", b"b"]


def test_commit_moves_the_group_forward_and_other_groups_are_independent(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b", b"c"])
    consumer = bus.consumer("enrich", [RAW])
    first = consumer.poll(2, timeout_secs=0)
    consumer.commit(first)
    assert consumer.lag() > 0
    assert values(bus.consumer("enrich", [RAW]).poll(10, timeout_secs=0)) == [b"c"]
    assert values(bus.consumer("store", [RAW]).poll(10, timeout_secs=0)) == [b"a", b"b", b"c"]


def test_a_consumer_reads_every_topic_it_subscribes_to(bus: Bus) -> None:
    publish(bus, RAW, [b"raw"])
    publish(bus, ALERTS, [b"alert"])
    consumer = bus.consumer("store", [RAW, ALERTS])
    got = consumer.poll(10, timeout_secs=0) + consumer.poll(10, timeout_secs=0)
    assert sorted(values(got)) == [b"alert", b"raw"]
    consumer.commit(got)
    assert consumer.lag() == 0


def test_committed_offsets_and_records_survive_a_restart(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    publish(bus, RAW, [b"a", b"b", b"c"])
    consumer = bus.consumer("enrich", [RAW])
    consumer.commit(consumer.poll(1, timeout_secs=0))
    bus.close()
    reopened = LocalBus(tmp_path / "bus")
    assert values(reopened.consumer("enrich", [RAW]).poll(10, timeout_secs=0)) == [b"b", b"c"]
    reopened.close()


def test_a_torn_write_at_the_tail_is_dropped_on_open(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    publish(bus, RAW, [b"whole-1", b"whole-2"])
    bus.close()
    segment = next((tmp_path / "bus" / RAW).glob("*.log"))
    with open(segment, "ab") as handle:            # what kill -9 mid-write leaves behind
        handle.write(HEADER.pack(100, 0, 1) + b"k" + b"partial")
    reopened = LocalBus(tmp_path / "bus")
    publish(reopened, RAW, [b"after"])
    got = reopened.consumer("enrich", [RAW]).poll(10, timeout_secs=0)
    assert values(got) == [b"whole-1", b"whole-2", b"after"]
    reopened.close()


def test_a_corrupted_record_ends_the_valid_log(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    publish(bus, RAW, [b"good", b"flipped"])
    bus.close()
    segment = next((tmp_path / "bus" / RAW).glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF                                  # the CRC no longer matches
    segment.write_bytes(bytes(data))
    reopened = LocalBus(tmp_path / "bus")
    assert values(reopened.consumer("enrich", [RAW]).poll(10, timeout_secs=0)) == [b"good"]
    reopened.close()


def test_segments_roll_and_consumed_ones_are_deleted(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus", segment_bytes=200)
    consumer = bus.consumer("enrich", [RAW])
    for i in range(10):
        publish(bus, RAW, [f"record-{i:02d}-".encode() * 4])
    got = []
    while batch := consumer.poll(3, timeout_secs=0):
        got.extend(batch)
        consumer.commit(batch)
    assert len(got) == 10
    publish(bus, RAW, [b"x" * 300])                   # a roll deletes what every group passed
    assert len(list((tmp_path / "bus" / RAW).glob("*.log"))) <= 2
    assert values(consumer.poll(10, timeout_secs=0)) == [b"x" * 300]
    bus.close()


def test_one_process_owns_a_data_directory(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    with pytest.raises(Unavailable, match="in use by another ctrail process"):
        LocalBus(tmp_path / "bus")
    bus.close()
    LocalBus(tmp_path / "bus").close()


def test_offset_files_are_replaced_atomically(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    publish(bus, RAW, [b"a"])
    consumer = bus.consumer("enrich", [RAW])
    consumer.commit(consumer.poll(1, timeout_secs=0))
    leftovers = [p for p in (tmp_path / "bus" / RAW).iterdir() if p.suffix == ".tmp"]
    assert leftovers == []
    assert int((tmp_path / "bus" / RAW / "enrich.offset").read_text()) > 0
    bus.close()
    assert os.path.exists(tmp_path / "bus" / ".lock")
