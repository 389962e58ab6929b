"""`ctrail dlq replay [QUERY]`: dead letters back to the stage that rejected them, after a fix.

Through the same pipeline as `ctrail ingest`: embedded, this process runs every stage; on Kafka
it publishes and waits for the workers. Then `N replayed, M still rejected`. A record rejected
again is dead-lettered again with its new reason; the exit status is 0 only when every selected
dead letter got a verdict (replayed or still rejected).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import datetime
from typing import Any, Sequence

from collector import PARSERS, build_parser
from ctrail.cli.common import print_docs, settings_of
from ctrail.components import Parser
from ctrail.errors import Unavailable
from ctrail.event import Rejection
from ctrail.query import parse_time
from ctrail.runtime.dlq_watch import DlqWatch
from ctrail.runtime.pipeline import STAGE_NAMES, Pipeline
from ctrail.runtime.replay import (
    Parsed,
    ParserFor,
    Rejected,
    Resubmit,
    Step,
    Unreplayable,
    Verdict,
    judge,
    original_bytes,
    publish,
    same_record,
    verdict,
)
from ctrail.runtime.resolution import select, verdict_records, write_verdicts
from ctrail.settings import Settings

PLAN_COLUMNS = (("id", "id"), ("stage", "stage"), ("reason", "reason"), ("origin", "origin"),
                ("replay", "replay.action"), ("expected", "replay.expected"))


def time_range(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    return (parse_time(args.time_from) if args.time_from else None,
            parse_time(args.time_to) if args.time_to else None)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    time_from, time_to = time_range(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs, _ = select(store, args.query, time_from, time_to, args.limit, args.all)
        letters = [Rejection.model_validate(doc) for doc in docs]
        parser_for = _parsers(settings, args.dry_run)
        steps = [judge(dead, parser_for, args.source) for dead in letters]
        if args.dry_run:
            return _print_plan(letters, steps, args.format)
        verdicts, behind = replay(settings, letters, steps, args.wait)
        run = uuid.uuid4().hex
        write_verdicts(store, [r for v in verdicts for r in verdict_records(v, run)])
    finally:
        store.close()
    counts = {outcome: sum(v.outcome == outcome for v in verdicts)
              for outcome in ("replayed", "still_rejected", "not_replayed")}
    _audit(settings, args, time_from, time_to, verdicts, counts)
    for v in verdicts:
        if v.outcome == "not_replayed":
            print(f"ctrail: dead letter {v.dead.id} ({v.dead.origin}) was not replayed: {v.why}",
                  file=sys.stderr)
    not_replayed = f", {counts['not_replayed']} not replayed" if counts["not_replayed"] else ""
    print(f"{counts['replayed']} replayed, {counts['still_rejected']} still rejected{not_replayed}")
    if any(behind.values()):
        lags = ", ".join(f"{stage} {lag}" for stage, lag in behind.items() if lag)
        raise Unavailable(f"published, but the workers did not catch up within {args.wait:.0f} s "
                          f"(still to process: {lags}); are `ctrail worker` processes running?")
    return 1 if counts["not_replayed"] else 0


def replay(settings: Settings, letters: Sequence[Rejection], steps: Sequence[Step],
           wait_secs: float) -> tuple[list[Verdict], dict[str, int]]:
    """Publish every step, let the stages judge what went back to them, and read their
    verdicts; also each stage's remaining lag (all 0 unless the workers fell behind)."""
    if not steps:
        return [], {}
    embedded = settings.bus.single_process
    # Embedded: this process runs every stage, as `ctrail ingest` does. On Kafka the workers do.
    pipeline = Pipeline(settings, STAGE_NAMES if embedded else ())
    try:
        # Opened before anything is published, so it reads the stages' verdicts and no older ones.
        watch = (DlqWatch(pipeline.bus, wait_secs)
                 if any(isinstance(step, Resubmit) for step in steps) else None)
        producer = pipeline.bus.producer()
        batch = settings.pipeline.batch_events
        for start in range(0, len(steps), batch):
            for step in steps[start:start + batch]:
                publish(step, producer)
            producer.flush()
            if embedded:
                pipeline.step()          # the backlog stays one batch deep, as in ingest
        if embedded:
            pipeline.drain()
            behind: dict[str, int] = {}
        else:
            behind = pipeline.wait_processed(wait_secs)
        seen = None
        if watch is not None and not any(behind.values()):
            seen = {same_record(r.stage, original_bytes(r)): r for r in watch.read_to_end()}
    finally:
        pipeline.close()
    return [verdict(dead, step, seen) for dead, step in zip(letters, steps)], behind


def _parsers(settings: Settings, dry_run: bool) -> ParserFor:
    built: dict[str, Parser] = {}

    def parser_for(name: str) -> Parser:
        if name not in built:
            # A dry run leaves the data directory alone: without the deployment's redaction key
            # (created on first use) a parser redacts under a key of its own, and judges alike.
            built[name] = (PARSERS[name]() if dry_run
                           else build_parser(name, settings.data_dir, settings.redaction))
        return built[name]
    return parser_for


def _print_plan(letters: Sequence[Rejection], steps: Sequence[Step], output_format: str) -> int:
    docs = [{**dead.model_dump(mode="json", by_alias=True, exclude_none=True),
             "replay": _planned(step)} for dead, step in zip(letters, steps)]
    print_docs(docs, output_format, "dead letters to replay (dry run)", PLAN_COLUMNS)
    if output_format != "json":
        kinds = [type(step) for step in steps]
        print(f"dry run: {kinds.count(Parsed)} would be replayed, {kinds.count(Rejected)} would "
              f"still be rejected, {kinds.count(Resubmit)} would go back to their stage, "
              f"{kinds.count(Unreplayable)} cannot be replayed; nothing was changed")
    return 0


def _planned(step: Step) -> dict[str, Any]:
    match step:
        case Parsed(_, events):
            return {"action": "parse", "expected": f"replayed ({events} events)"}
        case Rejected(again):
            return {"action": "parse" if again.stage == "collect" else "decode",
                    "expected": f"still rejected: {again.reason}", "reason": again.reason,
                    "detail": again.detail}
        case Resubmit(topic):
            return {"action": f"to {topic}", "expected": "the stage decides"}
        case Unreplayable(why):
            return {"action": "none", "expected": f"cannot be replayed: {why}"}
    raise AssertionError(step)


def _audit(settings: Settings, args: argparse.Namespace, time_from: datetime | None,
           time_to: datetime | None, verdicts: Sequence[Verdict], counts: dict[str, int]) -> None:
    from ctrail.audit.trail import record

    record(settings, "dlq-replay", {
        "query": args.query, "from": time_from.isoformat() if time_from else None,
        "to": time_to.isoformat() if time_to else None, "limit": args.limit,
        "all": args.all, "source": args.source, **counts,
        "dead_letters": {v.dead.id: v.outcome for v in verdicts},
        "replaced_by": {v.dead.id: v.now.id for v in verdicts if v.now and v.now.id != v.dead.id}})
