"""`ctrail ingest --source SRC FILE...`: files through the whole pipeline, then a summary."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from collector import PARSERS, build_parser
from collector.sources.files import FileSource, check_inputs
from ctrail.audit.spool import drain as drain_spool
from ctrail.cli.common import add_common, settings_of
from ctrail.components import EndOfInput, Parser, RawRecord
from ctrail.errors import Unavailable
from ctrail.event import Rejection
from ctrail.runtime.collect import STAGE as PARSE_STEP, Collector, parse_record
from ctrail.runtime.pipeline import STAGE_NAMES, Pipeline


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("ingest", help="push files through the pipeline and exit")
    parser.add_argument("--source", required=True, choices=sorted(PARSERS),
                        help="the format of the files")
    parser.add_argument("files", nargs="+", metavar="FILE", help="input files, or - for stdin")
    parser.add_argument("--wait", type=float, default=600.0, metavar="SECS",
                        help="on Kafka, how long to wait for the workers to process what was "
                             "published (default 600)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_inputs(args.files)
    settings = settings_of(args)
    # Embedded: this process runs every stage. On Kafka the `ctrail worker` processes do, and
    # joining their groups from here would only make them rebalance: publish, then wait.
    embedded = settings.bus.single_process
    pipeline = Pipeline(settings, STAGE_NAMES if embedded else ())
    try:
        if embedded:
            # This process holds the local bus now: the audit records other commands spooled
            # (ctrail.audit.spool) go through this pipeline and are stored with the rest.
            drain_spool(settings.data_dir, pipeline.bus.producer())
        with _progress(args.files) as progress:
            task = progress.add_task("ingesting", total=_total_bytes(args.files))
            files = FileSource(args.files, settings.pipeline.max_record_bytes,
                               on_progress=lambda n: progress.advance(task, n),
                               reassemble=args.source == "container-log")
            source: FileSource | _Counting = files
            if not embedded:
                # The workers parse what this command publishes; it parses too, only to say
                # what they will make of it (they report to no one).
                source = _Counting(files, build_parser(args.source, settings.data_dir,
                                                       settings.redaction))
            # A name of this run's own: the chain also processes what an earlier, killed run
            # left on the bus, and counts that under the earlier run's name.
            name = f"ingest-{uuid.uuid4().hex[:12]}"
            collector = pipeline.collector(name, source, args.source)
            _collect_all(collector, pipeline)
        behind = {} if embedded else pipeline.wait_processed(args.wait)
        if embedded:
            counts = pipeline.telemetry.snapshot().get(f"{PARSE_STEP}.{name}", {})
            accepted, dead = counts.get("sent", 0), counts.get("dead_lettered", 0)
        else:
            assert isinstance(source, _Counting)
            accepted, dead = source.accepted, source.dead_lettered
    finally:
        pipeline.close()
    print(f"{accepted} accepted, {dead} dead-lettered")
    if dead and not accepted:
        # Every record refused: most often records of another source given the wrong --source.
        print(f"ctrail: error: every record was dead-lettered; are these {args.source} records "
              f"(wrong --source? one of {', '.join(sorted(PARSERS))})? `ctrail dlq list` says "
              "why each was refused", file=sys.stderr)
        return 1
    if any(behind.values()):
        lags = ", ".join(f"{stage} {lag}" for stage, lag in behind.items() if lag)
        raise Unavailable(f"published, but the workers did not catch up within {args.wait:.0f} s "
                          f"(still to process: {lags}); are `ctrail worker` processes running?")
    return 0


class _Counting:
    """A source that also parses what it reads, to count events and dead letters."""

    def __init__(self, source: FileSource, parser: Parser) -> None:
        self.source, self.parser = source, parser
        self.accepted = self.dead_lettered = 0

    def read(self, max_records: int) -> list[RawRecord]:
        records = self.source.read(max_records)
        for record in records:
            outcome = parse_record(self.parser, record)
            items = [outcome] if isinstance(outcome, Rejection) else outcome
            dead = sum(isinstance(item, Rejection) for item in items)
            self.dead_lettered += dead
            self.accepted += len(items) - dead
        return records

    def commit(self, records: Sequence[RawRecord]) -> None:
        self.source.commit(records)

    def close(self) -> None:
        self.source.close()


def _collect_all(collector: Collector, pipeline: Pipeline) -> None:
    """Interleave collecting and the stages so the backlog stays one batch deep, then drain."""
    while True:
        try:
            collector.run_once()
        except EndOfInput:
            break
        pipeline.step()
    pipeline.drain()


def _total_bytes(files: list[str]) -> int | None:
    if "-" in files:
        return None
    return sum(os.path.getsize(name) for name in files)


def _progress(files: list[str]) -> Progress:
    return Progress("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True,
                    disable=not sys.stderr.isatty())
