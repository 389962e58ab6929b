"""`ctrail alerts [--since DURATION] [--rule ID]`: the alerts raised."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Final

from ctrail.audit.trail import period, record
from ctrail.cli.common import add_common, cut_note, fetch_limit, print_docs, settings_of
from ctrail.event import fixed_width
from ctrail.query import And, Query, Range, parse_duration, parse_query

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("rule", "rule.id"), ("severity", "alert.severity"),
    ("name", "rule.name"), ("user", "user.name"), ("namespace", "kubernetes.namespace"),
    ("pod", "kubernetes.pod.name"), ("count", "alert.count"),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("alerts", help="alerts raised")
    parser.add_argument("--since", help="only alerts newer than this, e.g. 24h, 7d")
    parser.add_argument("--time", choices=("event", "raised"), default="event",
                        help="what --since counts: the time of the event that raised the alert "
                        "(default), or when the alert was raised (event.ingested: when that "
                        "event reached ContainerTrail; a forensic import of old logs raises "
                        "alerts now about events of then)")
    parser.add_argument("--rule", help="only this rule id, e.g. CT-K8S-004")
    parser.add_argument("--limit", type=int, default=1000,
                        help="most alerts to print (default 1 000; a table at most 1 000, "
                             "JSON at most 100 000)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    since = datetime.now(timezone.utc) - parse_duration(args.since) if args.since else None
    query = f'rule.id:"{args.rule}"' if args.rule else "*"
    tree: Query = parse_query(query)
    event_since = since
    if since is not None and args.time == "raised":
        # Stored times have one fixed-width form, so they compare as text as they do in time.
        tree, event_since = And((tree, Range("event.ingested", fixed_width(since), None))), None
    settings = settings_of(args)
    limit = fetch_limit(args.limit, args.format)
    store = settings.store.build(settings.data_dir)
    try:
        # Counted before printing and recorded, as search does: a reader that stops early
        # (`| head`) has still looked. JSON is streamed (up to 100 000 alerts), a table is held.
        results = min(limit, store.count(tree, "alerts", event_since, None))
        record(settings, "alerts-search", {"query": query, "since": args.since,
                                           "time": args.time, "rule": args.rule,
                                           **period(since, None), "limit": args.limit,
                                           "results": results})
        printed = print_docs(store.stream(tree, "alerts", event_since, None, limit),
                             args.format, "alerts", COLUMNS)
    finally:
        store.close()
    cut_note(args.limit, args.format, printed)
    return 0
