"""Source: the container log files the kubelet keeps (/var/log/containers/*.log), followed live.

Every file matching the glob is followed with its own FileTail checkpoint; a file that appears is
read from its start, a file that is deleted is read to its end and then dropped with its
checkpoint. Partial lines (CRI tag P, json-file pieces without a newline) are joined per file by
CriReassembler, the same joiner `ctrail ingest --source container-log` uses. A piece still held
when a batch is committed keeps that file's checkpoint at the piece's start, so a restart reads it
again and nothing is lost; records released before it may be read twice, and keep their event id
(origin and bytes), so the store keeps them once.

Rotation by rename (kubelet: 0.log -> 0.log.<time>, the symlink in /var/log/containers follows
the new file) finishes the old file first; copytruncate starts again from the top. Either one
releases the pieces held from before it: a line cannot continue across it.
"""

from __future__ import annotations

import glob
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from collector.parsers.cri_reassembly import CriReassembler
from collector.tail import FileTail
from ctrail.components import RawRecord

END_GRACE_SECS: Final = 1.0
"""A file must stay missing this long before it is ended: during a rename rotation the path is
briefly absent, and the runtime may still append to the renamed file."""


class ContainerLogsConfig(BaseModel):
    """Follow every container log file matching a glob (CRI or Docker json-file lines)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["container_logs"] = "container_logs"
    glob: str = Field("/var/log/containers/*.log",
                      description="Files to follow; the kubelet's names give pod, namespace, "
                                  "container and container id.")
    poll_interval_secs: PositiveFloat = Field(
        0.5, description="How often to look for new lines and new files when idle.")

    @property
    def parser_name(self) -> str:
        return "container-log"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "ContainerLogsSource":
        checkpoints = data_dir / "checkpoints" / name
        checkpoints.mkdir(parents=True, exist_ok=True)
        return ContainerLogsSource(self.glob, checkpoints, max_record_bytes,
                                   self.poll_interval_secs)


@dataclass
class _Followed:
    tail: FileTail
    joiner: CriReassembler = field(default_factory=CriReassembler)
    generation: int = 0
    dirty: bool = False           # read since the last commit
    missing_since: float | None = None
    ending: bool = False          # deleted and read to its end: drop after the next commit


class ContainerLogsSource:
    def __init__(self, pattern: str, checkpoints: Path, max_record_bytes: int,
                 poll_interval_secs: float) -> None:
        self.pattern = pattern
        self.checkpoints = checkpoints
        self.cap = max_record_bytes
        self.poll_interval_secs = poll_interval_secs
        self._files: dict[str, _Followed] = {}
        self._uncommitted = False                 # read since the last commit
        self._next_scan = 0.0
        self._turn = 0
        self._scan(forget_missing=True)

    def read(self, max_records: int) -> list[RawRecord]:
        if self._uncommitted:
            self._rewind()
        if time.monotonic() >= self._next_scan:
            self._scan()
        followed = list(self._files.values())
        # Start at a different file each time, so one busy container cannot starve the rest.
        self._turn = (self._turn + 1) % max(len(followed), 1)
        out: list[RawRecord] = []
        for item in followed[self._turn:] + followed[:self._turn]:
            if len(out) >= max_records:
                break
            out.extend(self._read_file(item, max_records - len(out)))
        if not out:
            time.sleep(self.poll_interval_secs)
        self._uncommitted = any(item.dirty for item in self._files.values())
        return out

    def _rewind(self) -> None:
        """The last batch was not made durable (a full disk): read it again from each file's
        checkpoint, with the pieces held since then forgotten (they are read again too)."""
        for item in self._files.values():
            if item.dirty:
                item.tail.rewind()
                item.joiner = CriReassembler()
                item.generation = item.tail.generation
                item.dirty = item.ending = False
                item.missing_since = None
        self._uncommitted = False

    def commit(self, records: Sequence[RawRecord]) -> None:
        self._uncommitted = False
        for path, item in list(self._files.items()):
            if not item.dirty:
                continue
            held = item.joiner.held
            item.tail.commit((), hold=held[0] if held else None)
            item.dirty = False
            if item.ending and not held:
                item.tail.close()
                item.tail.checkpoint.unlink(missing_ok=True)
                del self._files[path]

    def close(self) -> None:
        for item in self._files.values():
            item.tail.close()

    @property
    def paths(self) -> list[str]:
        return sorted(self._files)

    def _read_file(self, item: _Followed, max_records: int) -> list[RawRecord]:
        records = item.tail.read(max_records)
        released = []
        if item.tail.generation != item.generation:
            # Rotated or truncated: what is held from before cannot continue in the new file.
            released.extend(item.joiner.flush())
            item.generation = item.tail.generation
        for record in records:
            released.extend(item.joiner.feed(record))
        if not records and not item.ending and self._gone(item):
            released.extend(item.joiner.flush())          # deleted and read to its end
            item.ending = True
        item.dirty = item.dirty or bool(records or released or item.ending)
        return released

    def _gone(self, item: _Followed) -> bool:
        if Path(item.tail.path).exists():
            item.missing_since = None
            return False
        now = time.monotonic()
        if item.missing_since is None:
            item.missing_since = now
        return now - item.missing_since >= max(END_GRACE_SECS, 2 * self.poll_interval_secs)

    def _scan(self, forget_missing: bool = False) -> None:
        """Follow new matches. At start, drop checkpoints of files that are gone."""
        self._next_scan = time.monotonic() + self.poll_interval_secs
        matches = sorted(glob.glob(self.pattern))
        for path in matches:
            if path not in self._files:
                tail = FileTail(Path(path), self._checkpoint_of(path), self.cap,
                                poll_interval_secs=0)
                self._files[path] = _Followed(tail)
        if forget_missing:
            keep = {self._checkpoint_of(p).name for p in matches}
            for stale in self.checkpoints.glob("*.json"):
                if stale.name not in keep:
                    stale.unlink(missing_ok=True)

    def _checkpoint_of(self, path: str) -> Path:
        digest = hashlib.blake2b(path.encode(), digest_size=12).hexdigest()
        return self.checkpoints / f"{digest}.json"
