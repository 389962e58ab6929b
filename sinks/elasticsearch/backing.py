"""Each data stream's backing indices as this writer last saw them: the write index, and those
older than it, the only ones where an id can be stored that `create` does not see.

Resolved once per stream (GET _resolve/index) and kept until a bulk answer names a write index
other than the one kept: the stream rolled over (or was created by that write), and the next
write resolves it again. Thread-safe: one store's concurrent bulk requests share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from sinks.elasticsearch.bulk import call

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


@dataclass(frozen=True, slots=True)
class StreamIndices:
    write: str | None               # None: the stream did not exist yet
    older: tuple[str, ...]


class BackingIndices:
    def __init__(self, client: Elasticsearch) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._known: dict[str, StreamIndices] = {}

    def older(self, streams: Iterable[str]) -> list[str]:
        """The backing indices older than the write index, of every stream named."""
        wanted = sorted(set(streams))
        with self._lock:
            missing = [stream for stream in wanted if stream not in self._known]
        if missing:
            self._resolve(missing)
        with self._lock:
            return [index for stream in wanted
                    for index in self._known.get(stream, StreamIndices(None, ())).older]

    def is_write_index(self, stream: str, index: str | None) -> bool:
        with self._lock:
            known = self._known.get(stream)
        return known is not None and known.write is not None and known.write == index

    def forget(self, streams: Iterable[str]) -> None:
        with self._lock:
            for stream in streams:
                self._known.pop(stream, None)

    def _resolve(self, streams: list[str]) -> None:
        resolved = call(self._client.indices.resolve_index, name=",".join(streams),
                        ignore_unavailable=True, allow_no_indices=True)
        found = {stream["name"]: stream["backing_indices"]
                 for stream in resolved.get("data_streams", ())}
        with self._lock:
            for stream in streams:
                backing = found.get(stream) or []
                # The newest backing index is the write index.
                self._known[stream] = StreamIndices(backing[-1] if backing else None,
                                                    tuple(backing[:-1]))
