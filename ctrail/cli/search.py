"""`ctrail search QUERY`: forensic search over stored events (Lucene query syntax)."""

from __future__ import annotations

import argparse
from typing import Final

from ctrail.audit.trail import period, record
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.query import parse_time

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("action", "event.action"), ("outcome", "event.outcome"),
    ("user", "user.name"), ("source.ip", "source.ip"), ("namespace", "kubernetes.namespace"),
    ("resource", "orchestrator.resource.type"), ("name", "orchestrator.resource.name"),
    ("dataset", "event.dataset"),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="forensic search over stored events")
    parser.add_argument("query", help="Lucene syntax, e.g. 'user.name:alice AND event.action:delete'")
    parser.add_argument("--from", dest="time_from", help="ISO 8601 time, or now-24h")
    parser.add_argument("--to", dest="time_to", help="ISO 8601 time, or now")
    parser.add_argument("--limit", type=int, default=100, help="most events to print (default 100)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    time_from = parse_time(args.time_from) if args.time_from else None
    time_to = parse_time(args.time_to) if args.time_to else None
    settings = settings_of(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs = store.search(args.query, "events", time_from, time_to, args.limit)
    finally:
        store.close()
    # Recorded before printing: a reader that stops early (`| head`) has still searched.
    record(settings, "search", {"query": args.query, **period(time_from, time_to),
                                "limit": args.limit, "results": len(docs)})
    print_docs(docs, args.format, "events", COLUMNS)
    return 0
