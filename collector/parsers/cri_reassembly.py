"""Joining the partial pieces of a container log line before it is parsed.

Runtimes split a long line (containerd at 16 KiB, Docker at 16 KiB) into pieces: CRI tag P then F,
json-file `log` values without, then with, a trailing newline. Pieces of stdout and stderr
interleave, so pieces are held per stream (and per format). The parser stays pure; this small stateful object sits
between a file source's line reader and `ContainerLogParser`, one instance per file.

A file source must not checkpoint past a held piece: `held` lists them, so it can commit up to
the first held record's position only, and after a restart the pieces are read again.
"""

from __future__ import annotations

from typing import Final

from collector.parsers.cri_log import peek
from ctrail.components import RawRecord

MAX_JOINED_BYTES: Final = 1024 * 1024


class CriReassembler:
    """Feed raw lines of one file in order; get back records that each hold one logical line.

    A line that is not a container log line passes through alone (the parser dead-letters it).
    A logical line longer than `max_bytes` is released as it stands; the parser tags it
    `partial_message`, as it does for pieces released by `flush()` when the file ends."""

    def __init__(self, max_bytes: int = MAX_JOINED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pieces: dict[tuple[bool, str | None], list[RawRecord]] = {}

    def feed(self, record: RawRecord) -> list[RawRecord]:
        shape = peek(record.data)
        if shape is None:
            return [record]
        stream, partial = shape
        # Keyed by format too: a json-file piece never continues a CRI line (Fluent Bit's rule).
        key = (record.data[:1] == b"{", stream)
        pieces = self._pieces.setdefault(key, [])
        pieces.append(record)
        if partial and sum(len(p.data) + 1 for p in pieces) <= self.max_bytes:
            return []
        del self._pieces[key]
        return [join(pieces)]

    def flush(self) -> list[RawRecord]:
        """Release every held piece (end of a finite input, or a file rotated away)."""
        held = sorted(self._pieces.values(), key=lambda pieces: _line_number(pieces[0].origin))
        self._pieces.clear()
        return [join(pieces) for pieces in held]

    @property
    def held(self) -> tuple[RawRecord, ...]:
        """Records read but not yet released, oldest first."""
        return tuple(sorted((r for pieces in self._pieces.values() for r in pieces),
                            key=lambda r: _line_number(r.origin)))


def join(pieces: list[RawRecord]) -> RawRecord:
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    return RawRecord(b"\n".join(p.data for p in pieces), first.origin, first.received,
                     any(p.truncated for p in pieces), stream=first.stream)


def _line_number(origin: str) -> int:
    _path, _sep, line = origin.rpartition(":")
    return int(line) if line.isdigit() else 0
