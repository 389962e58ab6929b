"""A tailed file rotated while ContainerTrail is stopped: the checkpointed file is found again
by its identity (device+inode, else the fingerprint of its first bytes), finished, the files
rotated after it are read whole, then the file at the path; nothing lost, nothing read twice."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

from collector.tail import FileTail


def lines(prefix: str, count: int) -> bytes:
    return b"".join(b'{"auditID":"%s-%04d","stage":"ResponseComplete"}\n' % (prefix.encode(), i)
                    for i in range(count))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)
    time.sleep(0.01)                    # distinct modification times, as rotations have


def run_until_idle(path: Path, checkpoint: Path, batch: int = 7) -> list[bytes]:
    """Start a tail, read and commit until nothing more comes, stop it: one run of ctrail."""
    tail = FileTail(path, checkpoint, 4096, poll_interval_secs=0)
    got: list[bytes] = []
    try:
        for _ in range(10_000):
            records = tail.read(batch)
            if not records:
                records = tail.read(batch)      # a rotated file's end: the next one follows
                if not records:
                    break
            tail.commit(records)
            got.extend(r.data for r in records)
    finally:
        tail.close()
    return got


def read_part(path: Path, checkpoint: Path, count: int) -> list[bytes]:
    """A run stopped after `count` lines were committed (then killed: nothing else saved)."""
    tail = FileTail(path, checkpoint, 4096, poll_interval_secs=0)
    records = tail.read(count)
    tail.commit(records)
    tail.close()
    return [r.data for r in records]


def expected(*chunks: bytes) -> list[bytes]:
    return [line for chunk in chunks for line in chunk.splitlines()]


def test_a_rename_while_stopped_finishes_the_old_file_first(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    first, rest, new = lines("a", 50), lines("b", 300), lines("c", 20)
    append(log, first)
    got = read_part(log, ckpt, 50)
    append(log, rest)
    os.rename(log, tmp_path / "audit-2026-12-07T11-00-00.000.log")   # lumberjack's name
    append(log, new)
    got += run_until_idle(log, ckpt)
    assert got == expected(first, rest, new)


def test_several_rotations_while_stopped_are_read_oldest_first(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    chunks = [lines(f"r{i}", 40) for i in range(4)]
    append(log, chunks[0][:len(chunks[0]) // 2])
    got = read_part(log, ckpt, 10)
    append(log, chunks[0][len(chunks[0]) // 2:])
    for generation in range(1, 4):               # logrotate: .1 -> .2 -> .3, then a new file
        for older in range(generation - 1, 0, -1):
            os.rename(tmp_path / f"audit.log.{older}", tmp_path / f"audit.log.{older + 1}")
        os.rename(log, tmp_path / "audit.log.1")
        append(log, chunks[generation])
    got += run_until_idle(log, ckpt)
    assert got == expected(*chunks)


def test_a_rotated_file_gzipped_while_stopped_is_finished_from_the_gzip(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    old, new = lines("old", 200), lines("new", 30)
    append(log, old[:3000])
    got = read_part(log, ckpt, 1000)
    append(log, old[3000:])
    os.rename(log, tmp_path / "audit.log.1")
    with open(tmp_path / "audit.log.1", "rb") as src, \
            gzip.open(tmp_path / "audit.log.1.gz", "wb") as out:
        shutil.copyfileobj(src, out)
    (tmp_path / "audit.log.1").unlink()          # as logrotate's compress leaves it
    time.sleep(0.01)
    append(log, new)
    got += run_until_idle(log, ckpt)
    assert got == expected(old, new)


def test_a_rotation_gzipped_after_a_later_rotation_does_not_hide_it(tmp_path: Path) -> None:
    """lumberjack compresses in the background: the .gz of the first rotation is written after
    the second rotation, so it is newer than the file that follows it."""
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    chunks = [lines("first", 80), lines("second", 30), lines("live", 10)]
    append(log, chunks[0][:1500])
    got = read_part(log, ckpt, 1000)
    append(log, chunks[0][1500:])
    first = tmp_path / "audit-2026-12-07T11-00-00.000.log"
    os.rename(log, first)
    append(log, chunks[1])
    os.rename(log, tmp_path / "audit-2026-12-07T11-10-00.000.log")
    with open(first, "rb") as src, gzip.open(f"{first}.gz", "wb") as out:
        shutil.copyfileobj(src, out)
    first.unlink()
    append(log, chunks[2])
    got += run_until_idle(log, ckpt)
    assert got == expected(*chunks)


def test_copytruncate_while_stopped_finishes_the_copy(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    old, new = lines("old", 120), lines("new", 15)
    append(log, old[:2000])
    got = read_part(log, ckpt, 1000)
    append(log, old[2000:])
    shutil.copyfile(log, tmp_path / "audit.log.1")
    time.sleep(0.01)
    with open(log, "r+b") as live:               # truncated in place: the same inode
        live.truncate(0)
    append(log, new)
    got += run_until_idle(log, ckpt)
    assert got == expected(old, new)


def test_the_kubelets_container_log_rotation_while_stopped_loses_nothing(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "0.log", tmp_path / "ckpt.json"
    cri = [b"2026-12-07T11:00:%02d.000000000Z stdout F line %d\n" % (i % 60, i) for i in range(90)]
    append(log, b"".join(cri[:30]))
    got = read_part(log, ckpt, 10)
    append(log, b"".join(cri[30:60]))
    os.rename(log, tmp_path / "0.log.20261207-110000")
    append(log, b"".join(cri[60:]))
    got += run_until_idle(log, ckpt)
    assert got == expected(*cri)


def test_a_rotation_behind_the_kubelets_symlink_is_found_beside_its_target(
        tmp_path: Path) -> None:
    pod_dir = tmp_path / "pods" / "shop_web-7d4b9c_0a1b" / "nginx"
    pod_dir.mkdir(parents=True)
    (tmp_path / "containers").mkdir()
    link, ckpt = tmp_path / "containers" / "web-7d4b9c_shop_nginx-3d02.log", tmp_path / "c.json"
    link.symlink_to(pod_dir / "0.log")
    cri = [b"2026-12-07T11:00:00.%09dZ stdout F line %d\n" % (i, i) for i in range(60)]
    append(pod_dir / "0.log", b"".join(cri[:20]))
    got = read_part(link, ckpt, 5)
    append(pod_dir / "0.log", b"".join(cri[20:40]))
    os.rename(pod_dir / "0.log", pod_dir / "0.log.20261207-110000")
    append(pod_dir / "0.log", b"".join(cri[40:]))
    got += run_until_idle(link, ckpt)
    assert got == expected(*cri)


def test_a_checkpointed_file_that_is_gone_reads_the_current_file_whole(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    append(log, lines("gone", 10))
    read_part(log, ckpt, 10)
    log.unlink()
    append(log, lines("now", 5))
    assert run_until_idle(log, ckpt) == expected(lines("now", 5))


def test_an_unrelated_file_beside_the_log_is_not_read(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    append(log, lines("a", 10))
    read_part(log, ckpt, 5)
    append(tmp_path / "audit-policy.yaml", b"rules: []\n")
    append(tmp_path / "other.log", b"not ours\n")
    os.rename(log, tmp_path / "audit.log.1")
    append(log, lines("b", 3))
    assert run_until_idle(log, ckpt) == expected(lines("a", 10)[
        len(b"".join(lines("a", 10).splitlines(True)[:5])):], lines("b", 3))


def test_copytruncate_while_running_finishes_the_copy_then_the_file(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "audit.log", tmp_path / "ckpt.json"
    old, new = lines("old", 120), lines("new", 15)
    append(log, old[:2000])
    tail = FileTail(log, ckpt, 4096, poll_interval_secs=0)
    try:
        got = []
        while records := tail.read(50):
            tail.commit(records)
            got += [r.data for r in records]
        append(log, old[2000:])                  # written, not yet read, when logrotate runs
        shutil.copyfile(log, tmp_path / "audit.log.1")
        with open(log, "r+b") as live:
            live.truncate(0)
        append(log, new)
        for _ in range(10):
            records = tail.read(50)
            tail.commit(records)
            got += [r.data for r in records]
    finally:
        tail.close()
    assert got == expected(old, new)
