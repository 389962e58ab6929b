"""Following a log file the way kube-apiserver writes it, with a durable checkpoint.

The checkpoint (inode, position, line number) is saved only in commit(), after the records' events
are durable, so a restart resumes exactly after the last record that was safely published.
Rotation by rename (a new inode at the path) finishes the old file first; copytruncate (the file
shrinks below our position) starts again from the top.

A reader that holds records back (a partial container log line waiting for its end) commits with
`hold`: the checkpoint then stays at that record's start, so a restart reads it again. Held
records cannot continue across a file switch or a truncation; `generation` counts those.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Sequence

import orjson

from collector.lines import LineReader
from ctrail.components import RawRecord
from ctrail.durable import write_atomic


class FileTail:
    def __init__(self, path: Path, checkpoint: Path, max_record_bytes: int,
                 poll_interval_secs: float = 0.5) -> None:
        self.path = path
        self.checkpoint = checkpoint
        self.cap = max_record_bytes
        self.poll_interval_secs = poll_interval_secs
        self._handle: BinaryIO | None = None
        self._reader: LineReader | None = None
        self._inode = 0
        self.generation = 0                                # +1 at each rotation or truncation
        self._starts: dict[str, tuple[int, int]] = {}      # origin -> (start, lines before)

    def read(self, max_records: int) -> list[RawRecord]:
        """Complete lines appended since the last read; waits a poll interval when none."""
        if self._reader is None and not self._open():
            time.sleep(self.poll_interval_secs)
            return []
        assert self._reader is not None
        rotated = self._rotated()
        if os.fstat(self._reader.handle.fileno()).st_size < self._reader.position:
            self._reader.position, self._reader.number = 0, 0        # copytruncate
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
                origin = f"{self.path}:{line.number}"
                records.append(RawRecord(line.data, origin, datetime.now(timezone.utc),
                                         line.truncated, stream=str(self.path)))
                self._starts[origin] = (line.start, line.number - 1)
        return records

    def commit(self, records: Sequence[RawRecord], hold: RawRecord | None = None) -> None:
        if self._reader is None:
            return                                  # nothing opened yet: nothing to remember
        position, number = self._reader.position, self._reader.number
        if hold is not None and hold.origin in self._starts:
            position, number = self._starts[hold.origin]
        self._starts = {o: s for o, s in self._starts.items() if s[0] >= position}
        state = {"inode": self._inode, "position": position, "line": number}
        write_atomic(self.checkpoint, orjson.dumps(state))

    def close(self) -> None:
        self._close_handle()

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return False
        self._inode = os.fstat(handle.fileno()).st_ino
        saved = orjson.loads(self.checkpoint.read_bytes()) if self.checkpoint.exists() else {}
        position, number = 0, 0
        if saved.get("inode") == self._inode:                          # same file: resume
            position, number = saved["position"], saved["line"]
        handle.seek(position)
        self._handle = handle
        self._reader = LineReader(handle, self.cap, position, number)
        return True

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return False

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.generation += 1
            self._starts.clear()
        self._handle, self._reader = None, None
