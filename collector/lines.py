"""Reading newline-delimited records from a file with bounded memory.

A line longer than the hard cap is read past, not held: its first `cap` bytes are kept (so the
dead letter still shows what it was) and it is marked truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Final

SKIP_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes          # without the newline
    start: int           # byte position of the line in the file
    end: int             # position after its newline
    number: int          # 1-based
    truncated: bool = False


class LineReader:
    def __init__(self, handle: BinaryIO, cap: int, position: int = 0, number: int = 0) -> None:
        self.handle = handle
        self.cap = cap
        self.position = position
        self.number = number

    def next_line(self, final: bool) -> Line | None:
        """The next complete line, or None. `final`: the file will not grow, so a last line
        without a newline is complete; otherwise it is left for the next call (the handle is
        rewound to its start, so only seekable files may be read with final=False)."""
        data = self.handle.readline(self.cap + 1)
        if not data:
            return None
        truncated = False
        end = self.position + len(data)
        if not data.endswith(b"\n"):
            if len(data) > self.cap:
                truncated, data = True, data[:self.cap]
                skipped = self._skip_rest(final)
                if skipped is None:
                    self.handle.seek(self.position)
                    return None
                end = self.position + self.cap + 1 + skipped
            elif not final:
                self.handle.seek(self.position)   # a line still being written
                return None
        start, self.position = self.position, end
        self.number += 1
        return Line(data.rstrip(b"\r\n"), start, end, self.number, truncated)

    def _skip_rest(self, final: bool) -> int | None:
        """Bytes read past the cap up to and including the newline; None if the line is not
        finished yet and more may come."""
        skipped = 0
        while True:
            chunk = self.handle.readline(SKIP_CHUNK)
            skipped += len(chunk)
            if chunk.endswith(b"\n") or (not chunk and final):
                return skipped
            if not chunk:
                return None
