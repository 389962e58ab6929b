"""The Kafka bus against a real broker (`scripts/services up`): what the local log cannot show,
topics as the brokers store them, consumer groups sharing partitions, and rebalances."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Callable, Iterator

import pytest

from ctrail.bus import ALL_TOPICS, ENTITIES, EVENTS, RAW, Record
from ctrail.bus.kafka import KafkaBus, KafkaBusConsumer
from ctrail.bus.kafka_config import KafkaBusConfig
from ctrail.errors import Unavailable
from tests.services import kafka_bootstrap
from tests.waiting import wait_for

WAIT_SECS = 20.0


@pytest.fixture
def config() -> Iterator[KafkaBusConfig]:
    config = KafkaBusConfig(bootstrap_servers=kafka_bootstrap(),
                            namespace=f"test-{uuid.uuid4().hex[:12]}.")
    yield config
    cleanup = config.build()
    cleanup.admin.delete_topics([config.topic_name(t) for t in ALL_TOPICS])
    cleanup.close()


@pytest.fixture
def bus(config: KafkaBusConfig) -> Iterator[KafkaBus]:
    bus = config.build()
    yield bus
    bus.close()


def topic_resource(name: str, configs: dict[str, str] | None = None) -> object:
    # Imported here, after ctrail.bus.kafka has imported kafka-python past its import-time
    # DeprecationWarning on Python 3.11 (pytest turns warnings into errors).
    from kafka.admin import ConfigResource, ConfigResourceType

    return ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)


def publish(bus: KafkaBus, count: int, keys: int = 30) -> list[bytes]:
    producer = bus.producer()
    sent = [f"record-{i:04d}".encode() for i in range(count)]
    for i, value in enumerate(sent):
        producer.send(RAW, key=f"ns/pod-{i % keys}", value=value)
    producer.flush()
    return sent


class Member:
    """One worker of a stage: its own thread polls without pause, as `ctrail worker` does (a
    member takes part in a rebalance only while it polls), and commits each batch if asked."""

    def __init__(self, bus: KafkaBus, commit: bool) -> None:
        self.consumer = bus.consumer("process", [RAW])
        self.commit = commit
        self.received: list[Record] = []
        self._calls: queue.Queue[tuple[Callable[[], object], Future[object]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            while not self._calls.empty():
                call, result = self._calls.get()
                result.set_result(call())
            batch = self.consumer.poll(100, timeout_secs=0.1)
            self.received.extend(batch)
            if self.commit:
                self.consumer.commit(batch)
        self.consumer.close()

    def call(self, function: Callable[[], object]) -> object:
        """Run `function` on the member's thread: a Kafka consumer is not thread-safe."""
        result: Future[object] = Future()
        self._calls.put((function, result))
        return result.result(timeout=WAIT_SECS)

    def leave(self) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_SECS)

    def taken(self) -> set[tuple[str, int]]:
        return set(self.consumer.assigned())



@pytest.fixture
def members(bus: KafkaBus) -> Iterator[Callable[[bool], Member]]:
    started: list[Member] = []

    def start(commit: bool) -> Member:
        started.append(Member(bus, commit))
        return started[-1]

    yield start
    for member in started:
        member.leave()


def drain(consumer: KafkaBusConsumer, count: int) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + WAIT_SECS
    while len(got) < count and time.monotonic() < deadline:
        got.extend(consumer.poll(100, timeout_secs=0.5))
    return got


def test_topics_are_created_with_their_partitions_retention_and_compaction(
        bus: KafkaBus, config: KafkaBusConfig) -> None:
    names = [config.topic_name(t) for t in ALL_TOPICS]
    described = {t["name"]: len(t["partitions"]) for t in bus.admin.describe_topics(names)}
    assert described == {config.topic_name(RAW): 6, config.topic_name(EVENTS): 6,
                         config.topic_name("ctrail.alerts"): 3,
                         config.topic_name("ctrail.dlq"): 3, config.topic_name(ENTITIES): 3,
                         config.topic_name("ctrail.correlate"): 3}
    settings = bus.admin.describe_configs(
        [topic_resource(name) for name in names])["topic"]
    entities = settings[config.topic_name(ENTITIES)]
    assert entities["cleanup.policy"]["value"] == "compact"
    assert "retention.ms" not in entities
    raw = settings[config.topic_name(RAW)]
    assert raw["cleanup.policy"]["value"] == "delete"
    assert raw["retention.ms"]["value"] == str(7 * 24 * 3_600_000)


def test_starting_again_with_existing_topics_is_not_an_error(
        bus: KafkaBus, config: KafkaBusConfig) -> None:
    config.build().close()


def test_default_names_are_the_designs_and_a_namespace_prefixes_them() -> None:
    plain = KafkaBusConfig(bootstrap_servers="kafka-1:9092, kafka-2:9092")
    assert [plain.topic_name(t) for t in ALL_TOPICS] == [
        "ctrail.raw", "ctrail.events", "ctrail.alerts", "ctrail.dlq", "ctrail.entities",
        "ctrail.correlate"]
    assert plain.group_name("process") == "ctrail.process"
    assert plain.servers() == ["kafka-1:9092", "kafka-2:9092"]
    staging = KafkaBusConfig(bootstrap_servers="kafka:9092", namespace="staging.")
    assert staging.topic_name(RAW) == "staging.ctrail.raw"
    assert staging.group_name("process") == "staging.ctrail.process"


def test_unreachable_brokers_raise_unavailable_with_one_line() -> None:
    config = KafkaBusConfig(bootstrap_servers="127.0.0.1:1", connect_timeout_secs=1)
    with pytest.raises(Unavailable, match=r"^Kafka at 127\.0\.0\.1:1: connecting failed") as info:
        config.build()
    assert "\n" not in str(info.value)
    error = info.value                         # nothing chained: no traceback from kafka-python
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_one_keys_records_stay_in_one_partition_in_order(bus: KafkaBus) -> None:
    sent = publish(bus, 120, keys=7)
    got = drain(bus.consumer("process", [RAW]), 120)
    assert sorted(r.value for r in got) == sent
    for key in {r.key for r in got}:
        mine = [r for r in got if r.key == key]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == sorted(r.value for r in mine)


def test_two_members_of_a_group_share_partitions_and_each_record_is_consumed_once(
        bus: KafkaBus, members: Callable[[bool], Member]) -> None:
    a, b = members(True), members(True)
    wait_for(lambda: bool(a.taken() and b.taken()))
    assert a.taken().isdisjoint(b.taken())
    sent = publish(bus, 300)
    wait_for(lambda: len(a.received) + len(b.received) >= 300)
    assert a.received and b.received
    assert sorted(r.value for r in a.received + b.received) == sent
    # A member commits a batch after it has received it: wait for that commit.
    wait_for(lambda: a.consumer.lag() == 0)      # the whole group's lag


def test_a_member_that_leaves_hands_its_uncommitted_records_to_the_other(
        bus: KafkaBus, members: Callable[[bool], Member]) -> None:
    a, b = members(False), members(True)          # a never commits: as if it crashed
    wait_for(lambda: bool(a.taken() and b.taken()))
    publish(bus, 200)
    wait_for(lambda: len(a.received) + len(b.received) >= 200)
    uncommitted = sorted(r.value for r in a.received)
    already = len(b.received)
    assert uncommitted
    a.leave()
    wait_for(lambda: len(b.received) >= already + len(uncommitted))
    assert sorted(r.value for r in b.received[already:]) == uncommitted
    wait_for(lambda: b.consumer.lag() == 0)


def test_records_polled_before_a_revoke_are_left_to_the_new_owner(
        bus: KafkaBus, config: KafkaBusConfig, members: Callable[[bool], Member]) -> None:
    a = members(False)
    wait_for(lambda: bool(a.taken()))
    publish(bus, 200)
    wait_for(lambda: len(a.received) >= 200)
    before = list(a.received)
    b = members(False)                            # so that any commit found is a's
    wait_for(lambda: bool(a.taken() and b.taken()))
    a.call(lambda: a.consumer.commit(before))     # too late: b owns some of those partitions
    taken = {(config.topic_name(t), p) for t, p in b.taken()}
    group = config.group_name("process")
    committed = bus.admin.list_group_offsets(group)[group]
    assert [tp for tp, done in committed.items()
            if (tp.topic, tp.partition) in taken and done.offset >= 0] == []
    theirs = sorted(r.value for r in before if (config.topic_name(r.topic), r.partition) in taken)
    assert theirs
    wait_for(lambda: len(b.received) >= len(theirs))
    assert sorted(r.value for r in b.received) == theirs


def test_flush_raises_unavailable_when_the_broker_rejects_a_record(
        bus: KafkaBus, config: KafkaBusConfig) -> None:
    raw = config.topic_name(RAW)
    bus.admin.alter_configs([topic_resource(raw, {"max.message.bytes": "512"})])

    def applied() -> bool:     # a topic's new config reaches the broker's logs asynchronously
        described = bus.admin.describe_configs([topic_resource(raw)])["topic"][raw]
        return bool(described.get("max.message.bytes", {}).get("value") == "512")
    wait_for(applied)
    producer = bus.producer()
    producer.send(RAW, key="ns/pod", value=b"x" * 4096)
    with pytest.raises(Unavailable, match="1 of 1 records were not acknowledged"):
        producer.flush()


def test_a_producer_whose_record_was_refused_sends_the_next_batch(
        bus: KafkaBus, config: KafkaBusConfig) -> None:
    """kafka-python's idempotent producer keeps the error of a batch the broker refused and
    fails every later send with it: a stage would retry the same batch until restarted."""
    raw = config.topic_name(RAW)
    bus.admin.alter_configs([topic_resource(raw, {"max.message.bytes": "512"})])

    def applied() -> bool:
        described = bus.admin.describe_configs([topic_resource(raw)])["topic"][raw]
        return bool(described.get("max.message.bytes", {}).get("value") == "512")
    wait_for(applied)
    producer = bus.producer()
    producer.send(RAW, key="ns/pod", value=b"x" * 4096)
    with pytest.raises(Unavailable):
        producer.flush()
    producer.send(RAW, key="ns/pod", value=b"small enough")
    producer.flush()
    consumer = bus.consumer("after-refusal", [RAW])
    assert [r.value for r in drain(consumer, 1)] == [b"small enough"]
