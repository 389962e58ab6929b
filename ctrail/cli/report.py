"""`ctrail report run NAME [--from TS --to TS] [--out DIR]`: render a report now."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrail.cli.common import add_common, settings_of
from ctrail.query import parse_time


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="audit reports (weekly, user-activity, "
                                 "compliance, or one configured under `reports:`)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="render a report now")
    run_parser.add_argument("name", help="a name under `reports:`, or weekly, user-activity, "
                            "compliance")
    run_parser.add_argument("--from", dest="time_from", help="ISO 8601 time or now-7d "
                            "(default: the report's period before --to)")
    run_parser.add_argument("--to", dest="time_to", help="ISO 8601 time (default now)")
    run_parser.add_argument("--out", type=Path, help="directory to write to (default: the "
                            "report's out_dir, or DATA_DIR/reports/NAME)")
    add_common(run_parser)
    run_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ctrail.audit.trail import record
    from sinks.reports.run import run_report

    settings = settings_of(args)
    time_from = parse_time(args.time_from) if args.time_from else None
    time_to = parse_time(args.time_to) if args.time_to else None
    written = run_report(settings, args.name, time_from, time_to, args.out)
    record(settings, "report-run", {"report": args.name, "files": [str(p) for p in written]})
    for path in written:
        print(path)
    return 0
