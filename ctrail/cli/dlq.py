"""`ctrail dlq list`: dead-lettered records with their reason and origin."""

from __future__ import annotations

import argparse
from typing import Final

from ctrail.cli.common import add_common, print_docs, settings_of

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("stage", "stage"), ("reason", "reason"),
    ("origin", "origin"), ("detail", "detail"),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dlq", help="dead-lettered records")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list dead letters, oldest first")
    listing.add_argument("query", nargs="?", default="*",
                         help="filter, e.g. 'reason:invalid_json' (default: all)")
    listing.add_argument("--limit", type=int, default=1000, help="most dead letters to print")
    add_common(listing)
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs = store.search(args.query, "dead_letters", None, None, args.limit)
    finally:
        store.close()
    print_docs(docs, args.format, "dead letters", COLUMNS)
    return 0
