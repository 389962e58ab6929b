"""The finite source behind `ctrail ingest`: records from files (or `-`, standard input).

A file is newline-delimited (one record a line, as kube-apiserver's log backend and every
JSON-lines exporter write), except a file whose first line is a lone `{`: that is one
pretty-printed JSON document (an EventList saved with `kubectl get --raw` or by hand), read whole.
Container log files (`reassemble=True`) have their partial lines joined per file, as the live
`container_logs` source joins them: by `CriReassembler`.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Generator, Iterable, Iterator, Sequence

from collector.lines import LineReader
from collector.parsers.cri_reassembly import CriReassembler
from ctrail.components import EndOfInput, RawRecord
from ctrail.errors import UsageError

ProgressCallback = Callable[[int], None]


def check_inputs(paths: Sequence[str]) -> None:
    """UsageError naming the first input that cannot be read."""
    for name in paths:
        if name == "-":
            continue
        path = Path(name)
        if not path.exists():
            raise UsageError(f"no such file: {name}")
        if path.is_dir():
            raise UsageError(f"{name} is a directory; give the files inside it")


class FileSource:
    """Source over files read once; raises EndOfInput after the last record of the last file."""

    def __init__(self, paths: Sequence[str], max_record_bytes: int,
                 on_progress: ProgressCallback | None = None, reassemble: bool = False) -> None:
        self.paths = list(paths)
        self.reassemble = reassemble
        self.cap = max_record_bytes
        self.on_progress = on_progress or (lambda _n: None)
        self._records = self._iterate()

    def read(self, max_records: int) -> list[RawRecord]:
        batch = []
        for record in self._records:
            batch.append(record)
            if len(batch) >= max_records:
                break
        if not batch:
            raise EndOfInput()
        return batch

    def commit(self, records: Sequence[RawRecord]) -> None:
        """Nothing to remember: a re-run ingests the files again and ids make it idempotent."""

    def close(self) -> None:
        self._records.close()

    def _iterate(self) -> Generator[RawRecord, None, None]:
        for name in self.paths:
            with _open(name) as handle:
                records = self._records_of(name, handle)
                yield from reassembled(records) if self.reassemble else records

    def _records_of(self, name: str, handle: BinaryIO) -> Iterator[RawRecord]:
        reader = LineReader(handle, self.cap)
        first = reader.next_line(final=True)
        if first is not None and first.data.strip() == b"{":
            rest = handle.read(self.cap + 1)
            self.on_progress(first.end + len(rest))
            yield RawRecord(first.data + b"\n" + rest, f"{name}:1", _now(),
                            truncated=len(first.data) + len(rest) >= self.cap, stream=name)
            return
        line = first
        while line is not None:
            self.on_progress(line.end - line.start)
            if line.data.strip():
                yield RawRecord(line.data, f"{name}:{line.number}", _now(), line.truncated,
                                stream=name)
            line = reader.next_line(final=True)


def reassembled(records: Iterable[RawRecord]) -> Iterator[RawRecord]:
    """One file's container log lines with partial pieces joined; what is still held at its end
    is released as it stands (the parser tags it partial_message)."""
    joiner = CriReassembler()
    for record in records:
        yield from joiner.feed(record)
    yield from joiner.flush()


def _open(name: str) -> BinaryIO:
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def _now() -> datetime:
    return datetime.now(timezone.utc)
