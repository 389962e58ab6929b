"""Following a log file the way kube-apiserver writes it, with a durable checkpoint.

The checkpoint (the file's identity, position, line number) is saved only in commit(), after the
records' events are durable, so a restart resumes exactly after the last record that was safely
published. A read() that follows a read() without commit() (the batch could not be made durable:
a full disk) reads the same records again, from the checkpoint, rather than moving on.
Rotation by rename (a new inode at the path) finishes the old file first; copytruncate (the file
shrinks below our position) finishes its copy when one is beside it, then starts again from the
top. A rotation while we were stopped is found
at start by the checkpointed file's identity (collector.rotation): that file is finished, the
files rotated after it are read, then the file at the path.

A reader that holds records back (a partial container log line waiting for its end) commits with
`hold`: the checkpoint then stays at that record's start, so a restart reads it again. Held
records cannot continue across a file switch or a truncation; `generation` counts those.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import orjson

from collector.lines import LineReader
from collector.rotation import FINGERPRINT_BYTES, Identity, identity_of, locate, open_log
from ctrail.components import RawRecord
from ctrail.durable import write_atomic
from ctrail.errors import Unavailable

log = logging.getLogger(__name__)


class FileTail:
    def __init__(self, path: Path, checkpoint: Path, max_record_bytes: int,
                 poll_interval_secs: float = 0.5) -> None:
        self.path = path
        self.checkpoint = checkpoint
        self.cap = max_record_bytes
        self.poll_interval_secs = poll_interval_secs
        self._handle: BinaryIO | None = None
        self._reader: LineReader | None = None
        self._current = path                               # the file being read
        self._backlog: list[Path] = []                     # rotated files to read after it
        self._identity = Identity(0, 0, "", 0)
        self._uncommitted = False                          # read since the last commit
        self._saved_state: dict[str, Any] = {}
        self.generation = 0                                # +1 at each rotation or truncation
        self._starts: dict[str, tuple[int, int]] = {}      # origin -> (start, lines before)

    def read(self, max_records: int) -> list[RawRecord]:
        """Complete lines appended since the last read; waits a poll interval when none."""
        if self._uncommitted:
            self.rewind()
        if self._reader is None and not self._open():
            time.sleep(self.poll_interval_secs)
            return []
        assert self._reader is not None
        if self._current != self.path:          # rotated before we started: finish it
            records = self._read_lines(max_records, final=True)
            if records:
                return records
            self._next_file()
            return self.read(max_records)
        rotated = self._rotated()
        if os.fstat(self._reader.handle.fileno()).st_size < self._reader.position:
            if self._finish_copy():                                  # copytruncate
                return self.read(max_records)
            self._reader.position, self._reader.number = 0, 0
            self._reader.handle.seek(0)
            self.generation += 1
            self._starts.clear()
        records = self._read_lines(max_records, final=rotated)
        if rotated and not records:
            self._close_handle()                                     # old file done: switch
            return self.read(max_records)
        if not records:
            time.sleep(self.poll_interval_secs)
        return records

    def _read_lines(self, max_records: int, final: bool) -> list[RawRecord]:
        assert self._reader is not None
        records: list[RawRecord] = []
        while len(records) < max_records:
            line = self._reader.next_line(final=final)
            if line is None:
                break
            if line.data.strip():
                # The path, also for a rotated file: line numbers run on across a rotation,
                # so a line read again after one keeps its origin (the container log's id).
                origin = f"{self.path}:{line.number}"
                records.append(RawRecord(line.data, origin, datetime.now(timezone.utc),
                                         line.truncated, stream=str(self.path)))
                self._starts[origin] = (line.start, line.number - 1)
        self._uncommitted = self._uncommitted or bool(records)
        return records

    def commit(self, records: Sequence[RawRecord], hold: RawRecord | None = None) -> None:
        if self._reader is None:
            return                                  # nothing opened yet: nothing to remember
        self._uncommitted = False       # durable on the bus: a failed save only reads again
        position, number = self._reader.position, self._reader.number
        if hold is not None and hold.origin in self._starts:
            position, number = self._starts[hold.origin]
        self._starts = {o: s for o, s in self._starts.items() if s[0] >= position}
        if self._identity.fingerprint_bytes != min(position, FINGERPRINT_BYTES):
            assert self._handle is not None
            self._identity = identity_of(self._handle, self._current, position)
        state = {"file": str(self._current), "device": self._identity.device,
                 "inode": self._identity.inode, "fingerprint": self._identity.fingerprint,
                 "fingerprint_bytes": self._identity.fingerprint_bytes,
                 "position": position, "line": number}
        if state != self._saved_state:              # an idle poll commits nothing new
            try:
                write_atomic(self.checkpoint, orjson.dumps(state))
            except OSError as exc:  # a full disk: read on; a restart reads from the last save
                raise Unavailable(f"cannot save the checkpoint {self.checkpoint}: "
                                  f"{exc.strerror or exc}") from exc
            self._saved_state = state

    def rewind(self) -> None:
        """Forget what was read since the last commit: the next read starts at the checkpoint
        (in the open file when it is still the checkpointed one: it may be deleted by now)."""
        self._uncommitted = False
        saved = self._saved_state
        if (self._reader is not None and saved.get("file") == str(self._current)
                and saved.get("inode") == self._identity.inode):
            self._reader.position, self._reader.number = saved["position"], saved["line"]
            self._reader.handle.seek(saved["position"])
            self._starts.clear()
            self.generation += 1
            return
        self._close_handle()
        self._backlog = []

    def close(self) -> None:
        self._close_handle()

    def _open(self) -> bool:
        """Open the checkpointed file where it is now (perhaps rotated), else the path's."""
        saved = self._saved()
        if saved is None:
            return self._open_at(self.path, 0, 0)
        identity, position, number, saved_at_ns = saved
        found = locate(self.path, identity, position, saved_at_ns)
        if found is None:
            if position:
                log.warning("The checkpointed file is gone; reading the file at the path from "
                            "its start.", extra={"path": str(self.path)})
            return self._open_at(self.path, 0, 0)
        current, self._backlog = found
        if current != self.path:
            log.info("Finishing a file rotated while stopped.", extra={
                "path": str(self.path), "rotated": str(current),
                "more_rotated": [str(p) for p in self._backlog]})
        return self._open_at(current, position, number)

    def _saved(self) -> tuple[Identity, int, int, int] | None:
        """The checkpoint: identity, position, line number, and when it was saved."""
        try:
            saved: dict[str, Any] = orjson.loads(self.checkpoint.read_bytes())
            saved_at_ns = os.stat(self.checkpoint).st_mtime_ns
        except FileNotFoundError:
            return None
        device = saved.get("device")
        if device is None:               # a checkpoint from before identities: inode only
            try:
                device = os.stat(self.path).st_dev
            except OSError:
                device = 0
        return (Identity(device, saved["inode"], saved.get("fingerprint", ""),
                         saved.get("fingerprint_bytes", 0)), saved["position"], saved["line"],
                saved_at_ns)

    def _open_at(self, path: Path, position: int, number: int) -> bool:
        try:
            handle = open_log(path)
            handle.seek(position)
        except (FileNotFoundError, EOFError):
            return False
        self._current, self._handle = path, handle
        self._identity = identity_of(handle, path, position)
        self._reader = LineReader(handle, self.cap, position, number)
        return True

    def _finish_copy(self) -> bool:
        """The file shrank under us (copytruncate): if its copy is beside it (recognised by its
        first bytes), read on in the copy from here, then the file from its top."""
        assert self._reader is not None
        position, number = self._reader.position, self._reader.number
        found = locate(self.path, self._identity, position, time.time_ns())
        if found is None or found[0] == self.path:
            return False
        self._close_handle()
        self._backlog = []
        return self._open_at(found[0], position, number)

    def _next_file(self) -> None:
        """The rotated file is done: the next one rotated after it, else the path's."""
        self._close_handle()
        while self._backlog:
            if self._open_at(self._backlog.pop(0), 0, 0):
                return
        self._open_at(self.path, 0, 0)

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._identity.inode
        except FileNotFoundError:
            return False

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.generation += 1
            self._starts.clear()
        self._handle, self._reader = None, None
