"""The local log keeps no copy of what every group has committed: at close, a log read to its
end by every consumer group rolls its last segment and deletes it (issue 11: a 17 MB ingest
left a 19 MB ctrail.raw segment beside the store for ever); a group behind, or no group at
all, keeps everything; positions go on where they were."""

from __future__ import annotations

from pathlib import Path

from ctrail.bus import RAW
from ctrail.bus.local import LocalBus


def publish(bus: LocalBus, values: list[bytes]) -> None:
    producer = bus.producer()
    for value in values:
        producer.send(RAW, key="k", value=value)
    producer.flush()


def read_all(bus: LocalBus, group: str) -> list[bytes]:
    consumer = bus.consumer(group, [RAW])
    got = []
    while batch := consumer.poll(100, timeout_secs=0):
        got.extend(record.value for record in batch)
        consumer.commit(batch)
    return got


def segment_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / RAW).glob("*.log"))


def test_a_log_every_group_has_read_keeps_nothing_after_close(tmp_path: Path) -> None:
    root = tmp_path / "bus"
    bus = LocalBus(root)
    publish(bus, [b"a" * 1000, b"b" * 1000])
    assert read_all(bus, "process") == [b"a" * 1000, b"b" * 1000]
    assert read_all(bus, "audit") == [b"a" * 1000, b"b" * 1000]
    bus.close()
    assert segment_bytes(root) == 0
    reopened = LocalBus(root)
    assert read_all(reopened, "process") == []             # nothing read twice
    publish(reopened, [b"c"])
    assert read_all(reopened, "process") == [b"c"]         # positions go on
    assert read_all(reopened, "audit") == [b"c"]
    reopened.close()


def test_a_group_behind_keeps_the_log(tmp_path: Path) -> None:
    root = tmp_path / "bus"
    bus = LocalBus(root)
    bus.consumer("slow", [RAW])                             # registered, reads nothing
    publish(bus, [b"a" * 1000])
    assert read_all(bus, "process") == [b"a" * 1000]
    bus.close()
    assert segment_bytes(root) > 1000
    reopened = LocalBus(root)
    assert read_all(reopened, "slow") == [b"a" * 1000]
    reopened.close()


def test_a_log_no_group_reads_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "bus"
    bus = LocalBus(root)
    publish(bus, [b"a" * 1000])
    bus.close()
    reopened = LocalBus(root)
    assert read_all(reopened, "late") == [b"a" * 1000]
    reopened.close()
