"""The audit spool's handover: records appended while pickups run are each published, none lost
to a rename between a writer's open and its write; a draining file a crash left goes first; a
torn line stays alone; a record that cannot be spooled is logged, never failing the command."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ctrail.audit.spool import DRAINING, SPOOL, append, drain
from ctrail.audit.trail import audit_event, record
from ctrail.bus import DLQ, RAW
from ctrail.bus.codec import RawEntry, decode, encode
from ctrail.bus.local import LocalBus
from ctrail.settings import Settings

WRITERS, EACH = 4, 150


def published(bus: LocalBus, topic: str) -> list[bytes]:
    """The values on `topic`; on ctrail.raw, the encoded events the entries carry."""
    consumer = bus.consumer("test", (topic,))
    values = []
    while records := consumer.poll(10_000, timeout_secs=0):
        values.extend(RawEntry.decode(record.value).data if topic == RAW else record.value
                      for record in records)
    consumer.close()
    return values


def test_records_appended_during_pickups_are_each_published(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    producer = bus.producer()
    done = threading.Event()
    sent = [encode(audit_event("search", {"query": f"q-{w}-{n}"}))
            for w in range(WRITERS) for n in range(EACH)]

    def write(share: list[bytes]) -> None:
        for line in share:
            append(tmp_path, line)
    writers = [threading.Thread(target=write, args=(sent[w * EACH:(w + 1) * EACH],))
               for w in range(WRITERS)]

    def pick_up() -> None:
        while not done.is_set():
            drain(tmp_path, producer)
    picker = threading.Thread(target=pick_up)
    picker.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    picker.join()
    drain(tmp_path, producer)
    try:
        assert sorted(published(bus, RAW)) == sorted(sent)
        assert not (tmp_path / SPOOL).exists() and not (tmp_path / DRAINING).exists()
    finally:
        bus.close()


def test_a_draining_file_left_by_a_crash_is_published_before_the_spool(tmp_path: Path) -> None:
    left, newer = (encode(audit_event("search", {"query": q})) for q in ("left", "newer"))
    (tmp_path / DRAINING).write_bytes(left + b"\n" + b'{"@timestamp": "torn')
    append(tmp_path, newer)
    bus = LocalBus(tmp_path / "bus")
    try:
        assert drain(tmp_path, bus.producer()) == 3
        assert published(bus, RAW) == [left, newer]
        (dead,) = [decode(DLQ, value) for value in published(bus, DLQ)]
        assert (dead.stage, dead.reason, dead.origin) == ("audit-spool", "undecodable",
                                                          f"{DRAINING} line 2")
        assert drain(tmp_path, bus.producer()) == 0
    finally:
        bus.close()


def test_a_line_torn_by_a_killed_writer_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    (tmp_path / SPOOL).write_bytes(b'{"@timestamp": "2026-11-25T10:00:00Z", "mess')   # no newline
    record = encode(audit_event("search", {"query": "after the tear"}))
    append(tmp_path, record)
    bus = LocalBus(tmp_path / "bus")
    try:
        assert drain(tmp_path, bus.producer()) == 2
        assert published(bus, RAW) == [record]                   # the record, whole
        assert len(published(bus, DLQ)) == 1                        # the torn line, kept
    finally:
        bus.close()


def test_a_record_that_cannot_be_kept_is_logged_and_the_command_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / SPOOL).mkdir(parents=True)          # e.g. no write access: the spool cannot open
    event = record(Settings(data_dir=tmp_path), "search", {"query": "still answered"})
    logged = [r for r in caplog.records if "could not be kept" in r.getMessage()]
    assert logged and event.event.id in logged[0].__dict__["record"]


def test_a_record_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    """On a real small tmpfs a write that does not fit stops part way: the part is cut off, so
    the spool holds whole records only, and the record can be spooled again once space returns."""
    from tests.small_filesystem import fill, small_filesystem

    first = encode(audit_event("search", {"query": "before the disk filled"}))
    big = encode(audit_event("search", {"query": "x" * 300_000}))     # more than is left
    with small_filesystem(tmp_path / "fs", 4 * 1024 * 1024) as fs:
        append(fs, first)
        spooled = (fs / SPOOL).read_bytes()
        ballast = fill(fs, leave_bytes=64 * 1024)
        with pytest.raises(OSError):
            append(fs, big)
        assert (fs / SPOOL).read_bytes() == spooled             # no part of the big record
        ballast.unlink()
        append(fs, big)
        bus = LocalBus(tmp_path / "bus")
        try:
            drain(fs, bus.producer())
            assert published(bus, RAW) == [first, big]
            assert published(bus, DLQ) == []
        finally:
            bus.close()
