"""The Kafka intake spool (ctrail.bus.intake_spool) against the real Kafka: what intake flushed
reaches ctrail.raw in order, once; shipped segments are deleted; a spool left when the key is
turned off is still shipped; below intake_min_free_bytes an append is refused whole."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from ctrail.bus import RAW
from ctrail.bus.intake_spool import DIRECTORY, IntakeSpool
from ctrail.bus.kafka import KafkaBus
from ctrail.bus.kafka_config import KafkaBusConfig, KafkaTopicPartitions
from ctrail.errors import Unavailable
from tests.services import kafka_bootstrap
from tests.small_filesystem import fill, small_filesystem
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def config() -> KafkaBusConfig:
    return KafkaBusConfig(bootstrap_servers=kafka_bootstrap(), intake_spool=True,
                          intake_min_free_bytes=0, namespace=f"t{uuid.uuid4().hex[:12]}.",
                          partitions=KafkaTopicPartitions(raw=1))


@pytest.fixture
def bus(config: KafkaBusConfig) -> Iterator[KafkaBus]:
    built = config.build()
    yield built
    built.close()


def on_kafka(config: KafkaBusConfig) -> list[bytes]:
    return list(config.read_topic(None, RAW, "spool-test", timeout_secs=30))


def spool_of(config: KafkaBusConfig, data_dir: Path, bus: KafkaBus) -> IntakeSpool:
    spool = config.open_intake_spool(data_dir, bus)
    assert spool is not None
    return spool


def test_flushed_records_reach_kafka_in_order_and_shipped_segments_are_deleted(
        config: KafkaBusConfig, bus: KafkaBus, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ctrail.bus.intake_spool.SEGMENT_BYTES", 64 * 1024)
    spool = spool_of(config, tmp_path, bus)
    spool.start()
    try:
        producer = spool.producer()
        sent = [f"record {n:05d} ".encode() * 20 for n in range(3000)]   # ~900 KiB: 14 segments
        for start in range(0, len(sent), 500):
            for value in sent[start:start + 500]:
                producer.send(RAW, "stream-1", value)
            producer.flush()
        wait_for(lambda: len(on_kafka(config)) >= len(sent), timeout=60)
        assert on_kafka(config) == sent                       # in order, each once
        segments = tmp_path / DIRECTORY / RAW
        wait_for(lambda: len(list(segments.glob("*.log"))) <= 2, timeout=30)
    finally:
        spool.close()


def test_a_spool_left_when_the_key_is_turned_off_is_still_shipped(
        config: KafkaBusConfig, bus: KafkaBus, tmp_path: Path) -> None:
    left = spool_of(config, tmp_path, bus)                   # never started: nothing shipped
    producer = left.producer()
    for n in range(10):
        producer.send(RAW, "stream-1", f"left {n}".encode())
    producer.flush()
    left.close()
    off = config.model_copy(update={"intake_spool": False})
    assert off.open_intake_spool(tmp_path / "elsewhere", bus) is None
    spool = spool_of(off, tmp_path, bus)
    direct = spool.producer()                                # intake writes Kafka itself
    direct.send(RAW, "stream-1", b"sent directly")
    direct.flush()
    assert on_kafka(config) == [b"sent directly"]
    spool.start()
    try:
        wait_for(lambda: len(on_kafka(config)) >= 11, timeout=60)
        assert on_kafka(config) == [b"sent directly", *(f"left {n}".encode() for n in range(10))]
    finally:
        spool.close()


def test_below_intake_min_free_bytes_an_append_is_refused_whole(
        config: KafkaBusConfig, bus: KafkaBus, tmp_path: Path) -> None:
    greedy = config.model_copy(update={"intake_min_free_bytes": 2 ** 60})
    spool = spool_of(greedy, tmp_path, bus)
    try:
        producer = spool.producer()
        producer.send(RAW, "stream-1", b"not kept")
        with pytest.raises(Unavailable, match="intake_min_free_bytes"):
            producer.flush()
        assert (tmp_path / DIRECTORY / RAW / f"{0:020d}.log").read_bytes() == b""
    finally:
        spool.close()


def test_a_record_larger_than_kafkas_default_limit_is_shipped_and_does_not_hold_back_the_rest(
        config: KafkaBusConfig, bus: KafkaBus, tmp_path: Path) -> None:
    """A raw record of pipeline.max_record_bytes with its envelope, or the dead letter of one,
    is over Kafka's default 1 MiB: it was refused and sent again for ever, and everything
    spooled behind it waited."""
    spool = spool_of(config, tmp_path, bus)
    spool.start()
    try:
        producer = spool.producer()
        sent = [b"before", b"r" * (1024 * 1024 + 600), b"\\u0000" * 1024 * 1024, b"after"]
        for value in sent:
            producer.send(RAW, "stream-1", value)
        producer.flush()
        wait_for(lambda: len(on_kafka(config)) >= len(sent), timeout=60)
        assert on_kafka(config) == sent
    finally:
        spool.close()


def test_a_spool_opened_on_a_full_disk_ships_once_space_returns(
        config: KafkaBusConfig, bus: KafkaBus, tmp_path: Path) -> None:
    """The forwarder's first offset file cannot be written on a full disk: it waits for space
    instead of ending (nothing would ship until the next start)."""
    with small_filesystem(tmp_path / "fs", 4 * 1024 * 1024) as fs:
        ballast = fill(fs)
        spool = spool_of(config, fs, bus)
        spool.start()
        try:
            time.sleep(1.5)                         # the forwarder's first tries fail
            ballast.unlink()
            producer = spool.producer()
            producer.send(RAW, "stream-1", b"after the disk was freed")
            producer.flush()
            wait_for(lambda: on_kafka(config) == [b"after the disk was freed"], timeout=60)
        finally:
            spool.close()
