"""The local log across processes: `ctrail run`'s intake process appends ctrail.raw as a guest
of the process that owns the data directory, which reads it as it grows, never past what the
writer has made durable; a topic has one writer at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ctrail.bus import RAW
from ctrail.bus.local import LocalBus
from ctrail.errors import Unavailable

WRITE = """
import sys
from pathlib import Path
from ctrail.bus import RAW
from ctrail.bus.local import LocalBus
bus = LocalBus(Path(sys.argv[1]), guest=True)
producer = bus.producer()
for i in range(int(sys.argv[2])):
    producer.send(RAW, key=f"k{i}", value=f"v{i}".encode())
producer.flush()
producer.send(RAW, key="late", value=b"never flushed")   # queued, not durable: never seen
bus.close()
"""


def write_elsewhere(root: Path, count: int) -> None:
    subprocess.run([sys.executable, "-c", WRITE, str(root), str(count)], check=True, timeout=60)


def test_the_owner_reads_what_a_guest_process_appends(tmp_path: Path) -> None:
    owner = LocalBus(tmp_path / "bus")
    owner.written_elsewhere(RAW)
    assert not owner.writes(RAW)
    consumer = owner.consumer("process", (RAW,))
    assert consumer.poll(10, timeout_secs=0) == [] and consumer.lag() == 0
    write_elsewhere(tmp_path / "bus", 50)
    assert consumer.lag() > 0
    first = consumer.poll(1000, timeout_secs=1.0)
    consumer.commit(first)
    write_elsewhere(tmp_path / "bus", 30)                       # a second batch, later
    second = consumer.poll(1000, timeout_secs=1.0)
    values = [r.value for r in [*first, *second]]
    assert values == [f"v{i}".encode() for i in range(50)] + [f"v{i}".encode() for i in range(30)]
    consumer.commit(second)
    assert consumer.lag() == 0
    owner.close()


def test_a_topic_has_one_writer_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctrail.bus.local as local

    monkeypatch.setattr(local, "WRITER_WAIT_SECS", 0.2)
    first = LocalBus(tmp_path / "bus", guest=True)
    first.topic(RAW)
    second = LocalBus(tmp_path / "bus", guest=True)
    with pytest.raises(Unavailable, match="written by another process"):
        second.topic(RAW)
    first.close()
    second.topic(RAW)                                            # free again
    second.close()
