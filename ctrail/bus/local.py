"""The durable local log: Kafka's semantics in the data directory, for embedded mode.

Layout: `<root>/<topic>/<base>.log` segments, where `<base>` is the topic position of the
segment's first byte, and `<root>/<topic>/<group>.offset` per consumer group.

Each record is framed as `value_len:u32 crc32:u32 key_len:u16 key value`, the CRC covering key
and value. `flush` writes and fsyncs; only then may a consumer see the records (so no stage ever
acts on something a crash can take back). A kill -9 can leave a torn frame at the end of the last
segment: opening the topic truncates back to the last whole, CRC-valid record. Offsets are written
to a temporary file, fsynced and renamed over the old one, so a committed offset is never torn.

A full disk (ENOSPC, EFBIG, EDQUOT) fails `flush` with Unavailable and nothing else: the bytes
of the failed write are cut off again at once (the segment ends at its last durable record, so a
later append is never written behind a torn one), the pending appends are discarded, and every
producer that had appended to them gets Unavailable from its own flush too, so no caller takes a
discarded record for durable. Callers keep their input unacknowledged and retry; the log
carries on by itself once space returns. ctrail.raw, intake's topic, also refuses appends while
the filesystem has less than `intake_min_free_bytes` free, so the processing chain (store, dead
letters, alerts) still has room to drain what intake took.

One process owns a data directory at a time (an exclusive flock); all stages in that process
share the bus across threads.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import IO, Final, Iterator, Sequence

from ctrail.bus import RAW, Record
from ctrail.durable import fsync_dir, lock_directory
from ctrail.errors import Unavailable

HEADER: Final = struct.Struct("<IIH")
DEFAULT_SEGMENT_BYTES: Final = 256 * 1024 * 1024
READ_CHUNK_BYTES: Final = 4 * 1024 * 1024
END_FILE: Final = ".end"          # the writer's durable end, for readers in other processes
END_BYTES: Final = 24
READER_WAIT_SECS: Final = 0.01    # how often a reader looks for another process's appends
WRITER_WAIT_SECS: Final = 10.0    # how long a writer waits for the previous one to end
DEFAULT_INTAKE_MIN_FREE_BYTES: Final = 64 * 1024 * 1024


def _segment_name(base: int) -> str:
    return f"{base:020d}.log"


def scan_valid_end(data: bytes) -> int:
    """Length of the prefix of `data` made of whole, CRC-valid frames."""
    pos, size = 0, len(data)
    while pos + HEADER.size <= size:
        value_len, crc, key_len = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + key_len + value_len
        if end > size or zlib.crc32(memoryview(data)[pos + HEADER.size:end]) != crc:
            break
        pos = end
    return pos


def read_topic_files(directory: Path) -> Iterator[bytes]:
    """Values of a topic read straight from its segment files, without the data directory's
    lock: a reader beside the process that owns the log (`ctrail timeline` beside `ctrail run`).
    Segments are only appended to, and a torn tail is cut by the same CRC check as on open."""
    for path in sorted(directory.glob("*.log")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:           # deleted after a compaction: the snapshot has it
            continue
        end, pos = scan_valid_end(data), 0
        while pos < end:
            value_len, _crc, key_len = HEADER.unpack_from(data, pos)
            start = pos + HEADER.size + key_len
            yield data[start:start + value_len]
            pos = start + value_len


class LocalTopic:
    """One topic's segments: append under a lock, readable up to `durable_end`.

    A topic has one writer process. After each fsync the writer records the durable end in the
    topic's END_FILE, so a process that only reads the topic (`written_elsewhere`: `ctrail run`
    reading what its intake process appends) follows it there, never past what is durable."""

    def __init__(self, directory: Path, segment_bytes: int, writer: bool = True,
                 min_free_bytes: int = 0) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.writer = writer
        self.min_free_bytes = min_free_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pending = bytearray()
        self.epoch = 0                  # +1 each time a failed flush discards the pending appends
        self.bases = sorted(int(p.stem) for p in directory.glob("*.log")) or [0]
        self._end_fd = os.open(directory / END_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        self._writer_lock: IO[str] | None = None
        try:
            # One writing process per topic: an intake process of a `ctrail run` killed a
            # moment ago may still be finishing its batch when the next run's intake starts.
            self._writer_lock = lock_directory(
                directory, f"{directory.name} is written by another process",
                WRITER_WAIT_SECS) if writer else None
            if writer:
                self._open_tail()
                self._publish_end()
            else:
                self.durable_end = self.bases[0]
                self.refresh()
        except BaseException:
            # A full disk refuses the first write of END_FILE: let go of what was opened, or
            # the next try would wait for this one's writer lock (and its descriptors leak).
            self._release_files()
            raise

    def _release_files(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
        if self._writer_lock is not None:
            self._writer_lock.close()
            self._writer_lock = None
        os.close(self._end_fd)
        self._end_fd = -1

    def _publish_end(self) -> None:
        os.pwrite(self._end_fd, str(self.durable_end).encode().ljust(END_BYTES), 0)

    def refresh(self) -> None:
        """A reader's view of a topic another process writes: its segments and durable end."""
        if self.writer:
            return
        text = os.pread(self._end_fd, END_BYTES, 0).strip()
        end = int(text) if text else 0
        if end != self.durable_end:
            self.bases = sorted(int(p.stem) for p in self.directory.glob("*.log")) or [0]
            self.durable_end = max(end, self.bases[0])

    def _open_tail(self) -> None:
        base = self.bases[-1]
        path = self.directory / _segment_name(base)
        data = path.read_bytes() if path.exists() else b""
        valid = scan_valid_end(data)
        self._file = open(path, "ab", buffering=0)   # unbuffered: a failed write is ours to cut
        if valid < len(data):                   # a torn write from a crash: drop it
            self._file.truncate(valid)
            os.fsync(self._file.fileno())
        self._file.seek(valid)
        self.durable_end = base + valid

    def append(self, key: bytes, value: bytes) -> int:
        """Queue a record for the next flush; returns the epoch it belongs to (see flush)."""
        body = key + value
        frame = HEADER.pack(len(value), zlib.crc32(body), len(key)) + body
        with self._lock:
            self._pending += frame
            return self.epoch

    def flush(self, epoch: int | None = None) -> None:
        """Make the pending appends durable. `epoch`: the one the caller's appends got; if a
        failed flush has discarded them since, raises Unavailable (they were never written).
        Raises Unavailable when the disk is full (nothing of this flush stays written)."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                raise Unavailable(f"{self.directory.name}: the appends were discarded by a "
                                  "failed write; send them again")
            if not self._pending:
                return
            try:
                self._check_free_space()
                self._write_pending()
            except OSError as exc:
                self._discard_pending()
                raise Unavailable(f"cannot append to {self.directory.name}: "
                                  f"{exc.strerror or exc}") from exc
            self.durable_end += len(self._pending)
            self._pending.clear()
            if self.durable_end - self.bases[-1] >= self.segment_bytes:
                self._roll()
            self._publish_end()

    def _check_free_space(self) -> None:
        if not self.min_free_bytes:
            return
        stats = os.statvfs(self.directory)
        free = stats.f_bavail * stats.f_frsize - len(self._pending)
        if free < self.min_free_bytes:
            raise OSError(errno.ENOSPC, f"{free // 1024**2} MiB free after this write, below "
                                        f"intake_min_free_bytes ({self.min_free_bytes // 1024**2}"
                                        " MiB)")

    def _write_pending(self) -> None:
        with memoryview(self._pending) as pending:
            written = 0
            while written < len(pending):
                written += self._file.write(pending[written:]) or 0
        os.fsync(self._file.fileno())

    def _discard_pending(self) -> None:
        """Cut the segment back to its durable end (a partial write would tear the next
        record), and drop the pending appends; their producers learn it from the epoch."""
        self._pending.clear()
        self.epoch += 1
        try:
            os.ftruncate(self._file.fileno(), self.durable_end - self.bases[-1])
            os.fsync(self._file.fileno())
        except OSError:
            # Shrinking needs no space, so this is rare; opening the topic cuts a torn tail too.
            pass

    def _roll(self) -> None:
        try:
            new = open(self.directory / _segment_name(self.durable_end), "ab", buffering=0)
        except OSError:
            return                      # no room for a new file now: roll at the next flush
        self._file.close()
        self._file = new
        self.bases.append(self.durable_end)
        try:
            fsync_dir(self.directory)
            self._delete_consumed_segments()
        except OSError:
            pass                        # retried at the next roll; nothing is lost meanwhile

    def delete_consumed(self) -> None:
        """Delete now, not only at the next roll, the whole segments every group has committed
        past (the intake spool frees what it shipped to Kafka at once)."""
        with self._lock:
            try:
                self._delete_consumed_segments()
            except OSError:
                pass                    # retried at the next call or roll

    def _committed_floor(self) -> int | None:
        """The lowest position a consumer group has committed; None when no group reads."""
        offsets = [int(p.read_text() or 0) for p in self.directory.glob("*.offset")]
        return min(offsets) if offsets else None

    def _delete_consumed_segments(self) -> None:
        """Delete whole segments that every consumer group has committed past."""
        floor = self._committed_floor()
        if floor is None:
            return
        while len(self.bases) > 1 and self.bases[1] <= floor:
            (self.directory / _segment_name(self.bases[0])).unlink(missing_ok=True)
            self.bases.pop(0)

    def _retire_consumed_tail(self) -> None:
        """At close, when every group has committed the whole log, roll so the last segment
        is deleted too: otherwise a log that never fills a segment (an ingest of less than
        segment_bytes) keeps a copy of everything it carried, already stored, for ever."""
        if self._pending or self.durable_end == self.bases[-1]:
            return
        try:
            floor = self._committed_floor()
        except (OSError, ValueError):
            return                      # unreadable offsets: keep everything
        if floor is not None and floor >= self.durable_end:
            self._roll()

    def segment_for(self, position: int) -> tuple[int, Path]:
        base = max((b for b in self.bases if b <= position), default=self.bases[0])
        return base, self.directory / _segment_name(base)

    def close(self) -> None:
        with self._lock:
            if self.writer:
                self._retire_consumed_tail()
                self._file.close()
            if self._writer_lock is not None:
                self._writer_lock.close()
                self._writer_lock = None
            if self._end_fd >= 0:                 # closing twice is harmless, as for files
                os.close(self._end_fd)
                self._end_fd = -1


class LocalProducer:
    def __init__(self, bus: "LocalBus") -> None:
        self._bus = bus
        self._touched: dict[str, int] = {}        # topic -> epoch of this producer's appends

    def send(self, topic: str, key: str, value: bytes) -> None:
        epoch = self._bus.topic(topic).append(key.encode(), value)
        self._touched.setdefault(topic, epoch)

    def flush(self) -> None:
        touched, self._touched = self._touched, {}   # a failed flush discarded them: resend
        for name in sorted(touched):
            self._bus.topic(name).flush(touched[name])


class _TopicCursor:
    """One group's read position in one topic, with a read-ahead buffer."""

    def __init__(self, topic: LocalTopic, offset_path: Path) -> None:
        self.topic = topic
        self.offset_path = offset_path
        self.committed = int(offset_path.read_text()) if offset_path.exists() else 0
        self.committed = max(self.committed, topic.bases[0])
        if not offset_path.exists():            # register the group, so retention waits for it
            self.save(self.committed)
        self.position = self.committed
        self._buffer = b""
        self._buffer_start = self.position

    def reset(self, position: int) -> None:
        self.position = position
        self._buffer, self._buffer_start = b"", position

    def read(self, max_records: int, max_bytes: int | None = None) -> list[Record]:
        records: list[Record] = []
        self.topic.refresh()
        end = self.topic.durable_end
        taken = 0                                   # bytes of values given
        while len(records) < max_records and self.position < end and \
                (max_bytes is None or taken < max_bytes):
            # Frames never span segments and durable_end moves by whole frames, so the frame
            # at `position` is complete on disk.
            self._ensure(HEADER.size, end)
            at = self.position - self._buffer_start
            value_len, _crc, key_len = HEADER.unpack_from(self._buffer, at)
            frame_len = HEADER.size + key_len + value_len
            self._ensure(frame_len, end)
            at = self.position - self._buffer_start
            key_start = at + HEADER.size
            next_offset = self.position + frame_len
            records.append(Record(self.topic.directory.name,
                                  self._buffer[key_start:key_start + key_len],
                                  self._buffer[key_start + key_len:at + frame_len],
                                  self.position, next_offset))
            self.position = next_offset
            taken += value_len
        return records

    def _ensure(self, needed: int, end: int) -> None:
        """Make the buffer hold `needed` bytes from `position`, reading ahead a chunk."""
        if self.position - self._buffer_start + needed <= len(self._buffer):
            return
        base, path = self.topic.segment_for(self.position)
        later = [b for b in self.topic.bases if b > base]
        limit = min(end, later[0]) if later else end
        with open(path, "rb") as handle:
            handle.seek(self.position - base)
            self._buffer = handle.read(min(limit - self.position, max(READ_CHUNK_BYTES, needed)))
        self._buffer_start = self.position

    def save(self, offset: int) -> None:
        """Overwrite the offset in place, fixed width, with one fdatasync: a write of 20 bytes
        at the start of the file is one sector, which a crash leaves old or new, never mixed
        (as SQLite's powersafe overwrite assumes), and readers take the zero-padded number as
        it is. Committed once per batch by every group, a temporary file, rename and two
        fsyncs (write_atomic) cost the chain's thread ~5% of its time. A new file (a group
        registering) also makes its directory entry durable."""
        try:
            created = not self.offset_path.exists()
            fd = os.open(self.offset_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, b"%020d" % offset, 0)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.offset_path.parent)
        except OSError as exc:          # a full disk: the batch is processed again later
            raise Unavailable(f"cannot save the offset {self.offset_path.name}: "
                              f"{exc.strerror or exc}") from exc
        self.committed = offset


class LocalConsumer:
    def __init__(self, bus: "LocalBus", group: str, topics: Sequence[str]) -> None:
        self._cursors = {name: _TopicCursor(bus.topic(name), bus.offset_path(name, group))
                         for name in topics}
        self._turn = 0
        self._wakeup = bus.wakeup

    def poll(self, max_records: int, timeout_secs: float,
             max_bytes: int | None = None) -> list[Record]:
        records = self._read(max_records, max_bytes)
        if records or timeout_secs <= 0:
            return records
        # A producer of this process wakes the wait; a topic written by another process is
        # looked at again every READER_WAIT_SECS.
        external = any(not cursor.topic.writer for cursor in self._cursors.values())
        deadline = time.monotonic() + timeout_secs
        while not records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._wakeup:
                self._wakeup.wait(min(left, READER_WAIT_SECS) if external else left)
            records = self._read(max_records, max_bytes)
        return records

    def _read(self, max_records: int, max_bytes: int | None) -> list[Record]:
        # Round-robin over topics so one busy topic cannot starve the others.
        names = list(self._cursors)
        for i in range(len(names)):
            name = names[(self._turn + i) % len(names)]
            records = self._cursors[name].read(max_records, max_bytes)
            if records:
                self._turn = (self._turn + i + 1) % len(names)
                return records
        return []

    def commit(self, records: Sequence[Record]) -> None:
        last: dict[str, int] = {}
        for record in records:
            last[record.topic] = max(last.get(record.topic, 0), record.next_offset)
        for name, offset in last.items():
            self._cursors[name].save(offset)

    def rewind(self) -> None:
        for cursor in self._cursors.values():
            cursor.reset(cursor.committed)

    def lag(self) -> int:
        for cursor in self._cursors.values():
            cursor.topic.refresh()
        return sum(c.topic.durable_end - c.committed for c in self._cursors.values())

    def close(self) -> None:
        pass


class LocalBus:
    """The bus of embedded mode; see the module docstring for the guarantees."""

    single_process: Final = True        # the data directory's lock lets one process in

    def __init__(self, root: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 guest: bool = False,
                 intake_min_free_bytes: int = DEFAULT_INTAKE_MIN_FREE_BYTES) -> None:
        """`guest`: a process its owner started to write topics the owner reads (see
        `written_elsewhere`); it takes no lock, the owner holds it for both."""
        self.root = root
        self.segment_bytes = segment_bytes
        self.intake_min_free_bytes = intake_min_free_bytes
        self._lock_file = None if guest else lock_directory(
            root, f"the data directory {root.parent} is in use by another ctrail process; "
                  "stop it or use another --data-dir")
        self._topics: dict[str, LocalTopic] = {}
        self._elsewhere: set[str] = set()
        self._topics_lock = threading.Lock()
        self.wakeup = threading.Condition()

    def topic(self, name: str) -> LocalTopic:
        with self._topics_lock:
            if name not in self._topics:
                self._topics[name] = LocalTopic(
                    self.root / name, self.segment_bytes, writer=name not in self._elsewhere,
                    min_free_bytes=self.intake_min_free_bytes if name == RAW else 0)
            return self._topics[name]

    def written_elsewhere(self, topic: str) -> None:
        with self._topics_lock:
            if topic in self._topics:
                raise RuntimeError(f"{topic} is open here already")
            self._elsewhere.add(topic)

    def writes(self, topic: str) -> bool:
        return topic not in self._elsewhere

    def offset_path(self, topic: str, group: str) -> Path:
        return self.root / topic / f"{group}.offset"

    def producer(self) -> "LocalProducer":
        return _NotifyingProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> LocalConsumer:
        return LocalConsumer(self, group, topics)

    def compacts(self, topic: str) -> bool:
        return False                    # segments are deleted whole, never compacted

    def group_members(self, group: str) -> int:
        return 0                        # no other process can hold this log

    def group_name(self, group: str) -> str:
        return group

    def close(self) -> None:
        for topic in self._topics.values():
            topic.close()
        if self._lock_file is not None:
            self._lock_file.close()


class _NotifyingProducer(LocalProducer):
    """Wakes consumers waiting in `poll` as soon as a flush makes records visible."""

    def flush(self) -> None:
        super().flush()
        with self._bus.wakeup:
            self._bus.wakeup.notify_all()
