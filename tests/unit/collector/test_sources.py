"""Sources: file tailing with checkpoints and rotation (webhooks: test_http_listener.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.lines import LineReader
from collector.tail import FileTail


def test_a_line_longer_than_the_cap_is_truncated_and_the_next_line_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nafter\n")
    with open(path, "rb") as handle:
        reader = LineReader(handle, cap=100)
        got = [reader.next_line(final=True) for _ in range(3)]
    assert [(l.data[:5], l.number, l.truncated) for l in got if l] == [
        (b"short", 1, False), (b"xxxxx", 2, True), (b"after", 3, False)]
    assert got[1] is not None and len(got[1].data) == 100


_open_tails: list[FileTail] = []


def _tail(path: Path, tmp_path: Path) -> FileTail:
    tail = FileTail(path, tmp_path / "checkpoint.json", 1024, poll_interval_secs=0.01)
    _open_tails.append(tail)
    return tail


@pytest.fixture(autouse=True)
def _close_tails():  # type: ignore[no-untyped-def]
    yield
    while _open_tails:
        _open_tails.pop().close()


def test_the_tail_resumes_after_the_last_committed_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"one\ntwo\nthree\n")
    tail = _tail(log, tmp_path)
    tail.commit(tail.read(2))
    tail.close()
    again = _tail(log, tmp_path)
    assert [r.data for r in again.read(10)] == [b"three"]


def test_the_tail_waits_for_a_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"whole\npart")
    tail = _tail(log, tmp_path)
    records = tail.read(10)
    assert [r.data for r in records] == [b"whole"]
    tail.commit(records)
    with open(log, "ab") as handle:
        handle.write(b"ial\n")
    assert [r.data for r in tail.read(10)] == [b"partial"]


def test_the_tail_finishes_a_rotated_file_then_follows_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"old-1\n")
    tail = _tail(log, tmp_path)
    records = tail.read(10)
    assert [r.data for r in records] == [b"old-1"]
    tail.commit(records)
    with open(log, "ab") as handle:
        handle.write(b"old-2\n")
    os.rename(log, tmp_path / "audit-2026-01-01.log")       # kube-apiserver's rotation
    log.write_bytes(b"new-1\n")
    records = tail.read(10)
    assert [r.data for r in records] == [b"old-2"]
    tail.commit(records)
    assert [r.data for r in tail.read(10)] == [b"new-1"]


def test_the_tail_starts_over_after_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"line-1\nline-2\n")
    tail = _tail(log, tmp_path)
    assert len(tail.read(10)) == 2
    log.write_bytes(b"fresh\n")                              # truncated in place, same inode
    assert [r.data for r in tail.read(10)] == [b"fresh"]
