"""`ctrail search QUERY`: forensic search over stored events (Lucene query syntax)."""

from __future__ import annotations

import argparse
from typing import Final

from ctrail.cli.common import add_common, parse_time_arg, print_docs, settings_of

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
    time_from, time_to = parse_time_arg(args.time_from), parse_time_arg(args.time_to)
    settings = settings_of(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs = store.search(args.query, "events", time_from, time_to, args.limit)
    finally:
        store.close()
    print_docs(docs, args.format, "events", COLUMNS)
    return 0
