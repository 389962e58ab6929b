"""`ctrail dlq list | replay`: dead-lettered records with their reason and origin; replay them."""

from __future__ import annotations

import argparse
from typing import Any, Final

from collector import PARSERS
from ctrail.cli import dlq_replay
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.runtime.resolution import select

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("stage", "stage"), ("reason", "reason"),
    ("origin", "origin"), ("detail", "detail"),
)
RESOLVED_COLUMN: Final = ("replay", "replay.summary")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dlq", help="dead-lettered records")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list dead letters, oldest first")
    _add_selection(listing, default_limit=1000, what="print")
    add_common(listing)
    listing.set_defaults(run=run_list)
    replay = actions.add_parser("replay", help="give dead letters back to the stage that "
                                "rejected them, after a fix")
    _add_selection(replay, default_limit=1000, what="replay")
    replay.add_argument("--source", choices=sorted(PARSERS),
                        help="parse the records the collect stage rejected with this source's "
                             "parser instead, for files ingested with the wrong --source (narrow "
                             "QUERY to them, e.g. 'dataset:kubernetes.audit')")
    replay.add_argument("--dry-run", action="store_true",
                        help="show what would be replayed and, for parse failures, whether they "
                             "parse now; change nothing")
    replay.add_argument("--wait", type=float, default=600.0, metavar="SECS",
                        help="on Kafka, how long to wait for the workers' verdicts (default 600)")
    add_common(replay)
    replay.set_defaults(run=dlq_replay.run)


def _add_selection(parser: argparse.ArgumentParser, default_limit: int, what: str) -> None:
    parser.add_argument("query", nargs="?", default="*",
                        help="filter, e.g. 'reason:invalid_json' (default: all)")
    parser.add_argument("--from", dest="time_from", help="ISO 8601 time, or now-24h")
    parser.add_argument("--to", dest="time_to", help="ISO 8601 time, or now")
    parser.add_argument("--limit", type=_positive, default=default_limit,
                        help=f"most dead letters to {what}, the newest (default {default_limit})")
    parser.add_argument("--all", action="store_true",
                        help="include dead letters a replay resolved (now stored, or replaced "
                             "by a dead letter with a new reason)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    time_from, time_to = dlq_replay.time_range(args)
    store = settings.store.build(settings.data_dir)
    try:
        docs, verdicts = select(store, args.query, time_from, time_to, args.limit, args.all)
    finally:
        store.close()
    if args.all:
        docs = [_with_verdict(doc, verdicts.get(doc["id"])) for doc in docs]
    columns = (*COLUMNS, RESOLVED_COLUMN) if args.all else COLUMNS
    print_docs(docs, args.format, "dead letters", columns)
    return 0


def _with_verdict(doc: dict[str, Any], verdict: dict[str, Any] | None) -> dict[str, Any]:
    if verdict is None:
        return doc
    outcome = verdict["outcome"]
    summary = ("succeeded" if outcome == "succeeded" else "stands again" if outcome == "reopened"
               else f"rejected again ({verdict.get('reason')}): {verdict.get('successor')}")
    return {**doc, "replay": {**verdict, "summary": summary}}
