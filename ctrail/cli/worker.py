"""`ctrail worker STAGE`: one stage as a worker on the configured bus (distributed mode).

Run N workers of a stage to share its load: they join the stage's consumer group and Kafka
splits the topic's partitions between them. `collect` runs the configured sources (webhooks,
tailers) and appends what they read to ctrail.raw; `process` parses, enriches, detects and
stores it (ctrail.runtime.chain). `scheduler` runs no stage: it renders the configured reports
on their schedules (run one); the evidence worker seals and expires its archive itself.
"""

from __future__ import annotations

import argparse

from ctrail.cli.common import add_common, settings_of
from ctrail.cli.run import serve
from ctrail.errors import UsageError
from ctrail.runtime.pipeline import FUSED_INTO_PROCESS, STAGE_NAMES

COLLECT = "collect"
SCHEDULER = "scheduler"
ROLES = (COLLECT, *STAGE_NAMES, SCHEDULER)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("worker", help="run one stage as a worker (distributed mode)")
    parser.add_argument("stage", metavar="STAGE",
                        help=f"one of: {', '.join(ROLES)}")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.stage in FUSED_INTO_PROCESS:
        raise UsageError(f"the {args.stage} stage is now part of `process` (parse, enrich, "
                         "detect and store in one chain): run `ctrail worker process`")
    if args.stage not in ROLES:
        raise UsageError(f"no stage {args.stage!r}; one of: {', '.join(ROLES)}")
    settings = settings_of(args)
    if args.stage == COLLECT:
        if not settings.sources:
            raise UsageError("`ctrail worker collect` needs at least one entry under `sources:`")
        return serve(settings, COLLECT, (), with_sources=True)
    if args.stage == SCHEDULER:
        if not settings.reports:
            raise UsageError("`ctrail worker scheduler` needs at least one entry under "
                             "`reports:`")
        return serve(settings, SCHEDULER, (), with_sources=False)
    if args.stage == "notify" and (settings.notify is None or not settings.notify.receivers):
        raise UsageError("`ctrail worker notify` needs at least one entry under "
                         "`notify.receivers:`")
    return serve(settings, args.stage, (args.stage,), with_sources=False)
