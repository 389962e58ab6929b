"""bench/search: N audit events in the embedded store, then the store-side time of searches.

Usage: .venv/bin/python bench/search.py [--events N] [--batch 1000] [--workers 2]

The events are corpus.write_audit_log's lines (real audit records), parsed and enriched by the
real parser and enricher in worker processes and written by this process through the store's
own `write`, BATCH events at a time (the figure `write` is the time inside `write` only). Then
each query runs through `search` (limit 100, what `ctrail search` shows) and `count`; the time
quoted is the median of five runs after one warm-up, in this process, against the store file
in a temporary directory that is removed at the end. Bytes per event: the store's file (after a
WAL checkpoint) over the events stored, beside the raw line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

FIELD_AND_FIELD = "user.name:kubernetes-admin AND event.action:delete"
COMMON_WORD = "authenticated"          # the system:authenticated group: nearly every event


def parse_chunk(lines: list[bytes]) -> list[bytes]:
    """Worker: audit lines -> encoded, enriched Events (what the store stage receives)."""
    from collector.parsers.k8s_audit import K8sAuditParser
    from ctrail.bus.codec import encode
    from ctrail.components import RawRecord
    from enrich import EnrichConfig

    global _parser, _enricher
    if "_parser" not in globals():
        _parser, _enricher = K8sAuditParser(), EnrichConfig().build()
    received = datetime.now(timezone.utc)
    out = []
    for n, line in lines_numbered(lines):
        for event in _parser.parse(RawRecord(line, f"audit.log:{n}", received)):
            out.append(encode(_enricher.enrich(event)))
    return out


def lines_numbered(chunk: list[bytes]) -> Iterator[tuple[int, bytes]]:
    first = int(chunk[0])
    return ((first + i, line) for i, line in enumerate(chunk[1:]))


def chunks(path: Path, size: int) -> Iterator[list[bytes]]:
    """Lists of `size` lines, each headed by the number of its first line."""
    chunk: list[bytes] = [b"1"]
    n = 1
    with open(path, "rb") as handle:
        for line in handle:
            chunk.append(line.rstrip(b"\n"))
            n += 1
            if len(chunk) > size:
                yield chunk
                chunk = [str(n).encode()]
    if len(chunk) > 1:
        yield chunk


def timed(run: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Median seconds of `repeat` runs after one warm-up, and the last result."""
    result = run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    from corpus import write_audit_log
    from ctrail.event import Event
    from sinks.sqlite.store import SqliteStore

    with tempfile.TemporaryDirectory(prefix="ctrail-bench-search-") as tmp:
        log = Path(tmp) / "audit.log"
        raw_bytes = write_audit_log(log, args.events)
        store_path = Path(tmp) / "store.sqlite3"
        store = SqliteStore(store_path)
        build_start = time.perf_counter()
        write_secs = 0.0
        stored = 0
        first: datetime | None = None
        last: datetime | None = None
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            for encoded in pool.imap(parse_chunk, chunks(log, args.batch)):
                events = [Event.model_validate_json(doc) for doc in encoded]
                start = time.perf_counter()
                store.write(events)
                write_secs += time.perf_counter() - start
                stored += len(events)
                for event in (events[0], events[-1]):
                    first = min(first or event.timestamp, event.timestamp)
                    last = max(last or event.timestamp, event.timestamp)
        build_secs = time.perf_counter() - build_start
        store.close()

        store = SqliteStore(store_path)        # searches from a fresh connection, as `ctrail search`
        assert first is not None and last is not None
        middle = first + (last - first) / 2
        window = (middle, middle + (last - first) / 100)          # 1% of the time span
        queries: list[tuple[str, str, tuple[datetime, datetime] | None]] = [
            ("field AND field", FIELD_AND_FIELD, None),
            ("free text (common word)", COMMON_WORD, None),
            ("time range", "*", window),
        ]
        figures = []
        for label, query, bounds in queries:
            time_from, time_to = bounds or (None, None)
            # Each lambda is timed at once, in this iteration: no late binding.
            search_secs, found = timed(lambda: store.search(query, "events", time_from, time_to, 100))  # noqa: B023
            count_secs, hits = timed(lambda: store.count(query, "events", time_from, time_to))  # noqa: B023
            figures.append((label, query, search_secs, count_secs, hits, len(found)))
        store.close()
        import sqlite3
        with sqlite3.connect(store_path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in Path(tmp).glob("store.sqlite3*"))

    print(f"stored: {stored} audit events ({raw_bytes / stored:.0f} raw bytes per event), "
          f"built in {build_secs:.0f} s")
    for label, query, _, count_secs, hits, _ in figures:
        print(f"  {label}: {query!r} -> {hits} hits; count {count_secs * 1000:.0f} ms")
    print(f"write: {stored / write_secs:.0f} events/s ({args.batch}-event batches)")
    print(f"bytes per event: {size / stored:.0f} ({size / raw_bytes:.2f}x the raw line)")
    for label, _, search_secs, _, _, _ in figures:
        print(f"{label}: {search_secs * 1000:.0f} ms")


if __name__ == "__main__":
    main()
