"""One suite for every bus: order per key, redelivery of uncommitted records, durability.

The generic tests run on the local log and on a real Kafka (`scripts/services up`); the tests
that open segment files or lock the data directory are about the local log only.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ctrail.bus import ALERTS, ALL_TOPICS, RAW, Bus, Consumer, Record
from ctrail.bus.kafka_config import KafkaBusConfig
from ctrail.bus.local import HEADER, LocalBus
from ctrail.errors import Unavailable
from tests.services import kafka_bootstrap

# Kafka delivers after a group join and a fetch round trip, not at once: wait up to this long.
DELIVERY_WAIT_SECS = 15.0


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.integration)])
def open_bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Bus]]:
    """Opens the bus under test; calling it again after `close` is a restart of the process."""
    opened: list[Bus] = []
    if request.param == "local":
        def build() -> Bus:
            return LocalBus(tmp_path / "bus")
    else:
        # A namespace per test: its own topics and consumer groups, nothing left from others.
        config = KafkaBusConfig(bootstrap_servers=kafka_bootstrap(),
                                namespace=f"test-{uuid.uuid4().hex[:12]}.")

        def build() -> Bus:
            return config.build()

    def open_one() -> Bus:
        opened.append(build())
        return opened[-1]

    yield open_one
    for bus in opened:
        bus.close()
    if request.param == "kafka":
        cleanup = config.build()
        cleanup.admin.delete_topics([config.topic_name(t) for t in ALL_TOPICS])
        cleanup.close()


@pytest.fixture
def bus(open_bus: Callable[[], Bus]) -> Bus:
    return open_bus()


def publish(bus: Bus, topic: str, values: list[bytes], key: str = "k") -> None:
    producer = bus.producer()
    for value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()


def poll_until(consumer: Consumer, count: int, max_records: int = 10) -> list[Record]:
    """Poll until `count` records arrived (or the wait is over), asking for no more than that."""
    got: list[Record] = []
    deadline = time.monotonic() + DELIVERY_WAIT_SECS
    while len(got) < count and time.monotonic() < deadline:
        got.extend(consumer.poll(min(max_records, count - len(got)), timeout_secs=0.5))
    return got


def values(records: list) -> list[bytes]:  # type: ignore[type-arg]
    return [r.value for r in records]


def test_records_come_back_in_order_with_their_keys(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b", b"c"], key="ns/pod")
    records = poll_until(bus.consumer("enrich", [RAW]), 3)
    assert values(records) == [b"a", b"b", b"c"]
    assert {r.key for r in records} == {b"ns/pod"}


def test_unflushed_records_are_not_visible(tmp_path: Path) -> None:
    # Local only: a Kafka producer sends in the background before `flush`, and a record the
    # brokers have made visible is already replicated, so acting on it is just as safe.
    bus = LocalBus(tmp_path / "bus")
    bus.producer().send(RAW, key="k", value=b"pending")
    assert bus.consumer("enrich", [RAW]).poll(10, timeout_secs=0) == []
    bus.close()


def test_a_poll_stops_at_its_byte_budget_and_the_next_poll_goes_on(bus: Bus) -> None:
    """A batch closes at max_bytes of values (a webhook record holds up to 400 events): each
    poll stops once its values reach the budget, a record larger than the budget comes alone,
    and the next polls deliver the rest, in order, once each."""
    sent = [bytes([65 + i]) * 100 for i in range(9)] + [b"z" * 1000, b"y" * 100]
    publish(bus, RAW, sent)
    consumer = bus.consumer("enrich", [RAW])
    polls: list[list[Record]] = []
    deadline = time.monotonic() + DELIVERY_WAIT_SECS
    while sum(map(len, polls)) < len(sent) and time.monotonic() < deadline:
        got = consumer.poll(100, timeout_secs=0.5, max_bytes=250)
        if got:
            polls.append(got)
    assert [r.value for batch in polls for r in batch] == sent
    for batch in polls:
        assert sum(len(r.value) for r in batch[:-1]) < 250     # the budget was not yet spent
    assert [b"z" * 1000] in [values(batch) for batch in polls]
    assert max(len(batch) for batch in polls) == 3


def test_uncommitted_records_are_delivered_again_after_rewind(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b"])
    consumer = bus.consumer("enrich", [RAW])
    assert values(poll_until(consumer, 2)) == [b"a", b"b"]
    consumer.rewind()
    assert values(poll_until(consumer, 2)) == [b"a", b"b"]


def test_commit_moves_the_group_forward_and_other_groups_are_independent(bus: Bus) -> None:
    publish(bus, RAW, [b"a", b"b", b"c"])
    consumer = bus.consumer("enrich", [RAW])
    first = poll_until(consumer, 2, max_records=2)
    assert values(first) == [b"a", b"b"]
    consumer.commit(first)
    assert consumer.lag() > 0          # bytes on the local log, records on Kafka
    consumer.close()                    # a restarted worker of the same group resumes after b
    assert values(poll_until(bus.consumer("enrich", [RAW]), 1)) == [b"c"]
    assert values(poll_until(bus.consumer("store", [RAW]), 3)) == [b"a", b"b", b"c"]


def test_a_consumer_reads_every_topic_it_subscribes_to(bus: Bus) -> None:
    publish(bus, RAW, [b"raw"])
    publish(bus, ALERTS, [b"alert"])
    consumer = bus.consumer("store", [RAW, ALERTS])
    got = poll_until(consumer, 2)
    assert sorted(values(got)) == [b"alert", b"raw"]
    assert {(r.topic, r.value) for r in got} == {(RAW, b"raw"), (ALERTS, b"alert")}
    consumer.commit(got)
    assert consumer.lag() == 0


def test_committed_offsets_and_records_survive_a_restart(open_bus: Callable[[], Bus]) -> None:
    bus = open_bus()
    publish(bus, RAW, [b"a", b"b", b"c"])
    consumer = bus.consumer("enrich", [RAW])
    consumer.commit(poll_until(consumer, 1, max_records=1))
    bus.close()
    reopened = open_bus()
    assert values(poll_until(reopened.consumer("enrich", [RAW]), 2)) == [b"b", b"c"]


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
