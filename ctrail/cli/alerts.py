"""`ctrail alerts [--since DURATION] [--rule ID]`: the alerts raised."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Final

from ctrail.audit.trail import period, record
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.query import parse_duration

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("rule", "rule.id"), ("severity", "alert.severity"),
    ("name", "rule.name"), ("user", "user.name"), ("namespace", "kubernetes.namespace"),
    ("pod", "kubernetes.pod.name"), ("count", "alert.count"),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("alerts", help="alerts raised")
    parser.add_argument("--since", help="only alerts newer than this, e.g. 24h, 7d")
    parser.add_argument("--rule", help="only this rule id, e.g. CT-K8S-004")
    parser.add_argument("--limit", type=int, default=1000, help="most alerts to print")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    since = datetime.now(timezone.utc) - parse_duration(args.since) if args.since else None
    query = f'rule.id:"{args.rule}"' if args.rule else "*"
    settings = settings_of(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs = store.search(query, "alerts", since, None, args.limit)
    finally:
        store.close()
    record(settings, "alerts-search", {"query": query, "since": args.since, "rule": args.rule,
                                       **period(since, None), "limit": args.limit,
                                       "results": len(docs)})
    print_docs(docs, args.format, "alerts", COLUMNS)
    return 0
