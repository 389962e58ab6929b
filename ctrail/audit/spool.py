"""The audit spool: audit records waiting for a pipeline to publish them, and their pickup.

Any ctrail command may append an audit record (one encoded Event a line) to
DATA_DIR/audit-spool.jsonl; `ctrail run` picks the spool up at start and every few seconds,
`ctrail ingest` at start. A pickup takes the whole spool at once by renaming it to
audit-spool.draining.jsonl, publishes every line to ctrail.raw, flushes, and only then
deletes the draining file. A crash before the delete leaves the draining file, which the next
pickup publishes again before anything else. Publishing twice stores nothing twice: the lines
are the encoded events with their ids, and both stores keep one document per event id
(SQLite: ON CONFLICT (id) DO NOTHING; Elasticsearch: _id is the event id, op_type create).

Writers and the pickup serialise on an exclusive flock of the spool file. A writer that opened
the spool just before a pickup renamed it would otherwise append to the file being drained,
after it was read, and the record would be deleted unpublished; so a writer, once it holds the
lock, checks that its file is still the one at the spool path, and opens the new one if not.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import IO, Final

from ctrail.bus import DLQ, EVENTS, Producer
from ctrail.bus.codec import decode, encode, publish_event
from ctrail.durable import fsync_dir
from ctrail.errors import InvalidInput, Retryable
from ctrail.event import Event
from ctrail.runtime.deadletter import rejection

log = logging.getLogger(__name__)
SPOOL: Final = "audit-spool.jsonl"
DRAINING: Final = "audit-spool.draining.jsonl"
PICKUP_EVERY_SECS: Final = 3.0


def append(data_dir: Path, line: bytes) -> Path:
    """Append one record durably (fsynced) to the spool; returns the spool's path."""
    path = data_dir / SPOOL
    data_dir.mkdir(parents=True, exist_ok=True)
    while True:
        created = not path.exists()
        with open(path, "a+b") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            if _is_at(out, path):
                # A writer killed mid-line left it without its newline: end that torn line
                # first, or this record would be glued to it and dead-lettered with it.
                torn = _ends_torn(out)
                _append_whole(out, (b"\n" if torn else b"") + line + b"\n")
                if created:
                    fsync_dir(data_dir)    # the new file's name is durable too
                return path
        # A pickup renamed the file we opened: append to the new spool instead.


def _append_whole(handle: IO[bytes], data: bytes) -> None:
    """Append `data` and fsync, or leave the file as it was: on a full disk a write can stop
    part way, and the part would end up a torn line (a dead letter beside the whole record
    that record() logs); it is cut off before the error goes on."""
    fd = handle.fileno()
    size = os.fstat(fd).st_size
    try:
        with memoryview(data) as view:
            written = 0
            while written < len(view):              # O_APPEND: each write lands at the end
                written += os.write(fd, view[written:])
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass                # rare (shrinking needs no space); the next append ends it
        raise


def _ends_torn(handle: IO[bytes]) -> bool:
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


def drain(data_dir: Path, producer: Producer) -> int:
    """Publish what a crashed pickup left, then the spool, each flushed before it is deleted;
    returns how many records were published (or dead-lettered, for a torn line)."""
    draining = data_dir / DRAINING
    published = _publish_and_delete(draining, producer) if draining.exists() else 0
    if _take_spool(data_dir):
        published += _publish_and_delete(draining, producer)
    return published


def _take_spool(data_dir: Path) -> bool:
    """Rename the spool to the draining file under the writers' lock; False when empty."""
    path = data_dir / SPOOL
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return False
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not _is_at(handle, path):
            return False            # renamed by someone else since we opened it
        os.replace(path, data_dir / DRAINING)
    return True


def _publish_and_delete(path: Path, producer: Producer) -> int:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            event = decode(EVENTS, line)
        except InvalidInput as exc:
            # A line torn by a writer's crash: kept in the DLQ, never dropped silently.
            dead = rejection(stage="audit-spool", reason=exc.reason, detail=exc.detail,
                             origin=f"{path.name} line {number}", raw=line,
                             dataset="containertrail.audit")
            producer.send(DLQ, dead.key, encode(dead))
        else:
            assert isinstance(event, Event)     # what decode() gives for ctrail.events
            publish_event(producer, event, "audit-spool")
    producer.flush()                    # durable on the bus before the file goes
    path.unlink()
    if lines:
        log.info("Published the spooled audit records.", extra={"records": len(lines)})
    return len(lines)


def _is_at(handle: IO[bytes], path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


class SpoolPickup:
    """Drains the spool into ctrail.raw at start, every `every_secs`, and once more at stop,
    from a thread of its own (`ctrail run`)."""

    def __init__(self, data_dir: Path, producer: Producer,
                 every_secs: float = PICKUP_EVERY_SECS) -> None:
        self.data_dir = data_dir
        self.producer = producer
        self.every_secs = every_secs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-spool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._drain_once()              # what was spooled while we were stopping

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_once()
            self._stop.wait(self.every_secs)

    def _drain_once(self) -> None:
        try:
            drain(self.data_dir, self.producer)
        except Retryable as exc:        # the bus is briefly away: the files wait for next time
            log.warning("Could not publish the audit spool yet.", extra={"error": str(exc)})
        except Exception:
            log.exception("Picking up the audit spool failed; it is kept for the next try.")
