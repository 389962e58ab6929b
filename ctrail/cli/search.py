"""`ctrail search QUERY`: forensic search over stored events (Lucene query syntax)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Final

from ctrail.audit.trail import DATASET as OWN_AUDIT, period, record
from ctrail.cli.common import add_common, cut_note, fetch_limit, print_docs, settings_of
from ctrail.query import (
    TIMESTAMP,
    And,
    Equals,
    Exists,
    Not,
    Or,
    Query,
    Range,
    Regex,
    Wildcard,
    parse_query,
    parse_time,
)

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("action", "event.action"), ("outcome", "event.outcome"),
    ("user", "user.name"), ("source.ip", "source.ip"), ("namespace", "kubernetes.namespace"),
    ("resource", "orchestrator.resource.type"), ("name", "orchestrator.resource.name"),
    ("dataset", "event.dataset"),
)

QUOTED: Final = re.compile(r'"(?:\\.|[^"\\])*"')
# A lower-case operator word standing alone between two terms.
LOWERCASE_OPERATOR: Final = re.compile(r"(?:(?<=\S)\s+(and|or|not)|^\s*(not))\s+(?=\S)")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="forensic search over stored events")
    parser.add_argument("query", help="Lucene syntax, e.g. 'user.name:alice AND event.action:delete'")
    parser.add_argument("--from", dest="time_from", help="ISO 8601 time, or now-24h")
    parser.add_argument("--to", dest="time_to", help="ISO 8601 time, or now")
    parser.add_argument("--limit", type=int, default=100,
                        help="most events to print (default 100; a table at most 1 000, "
                             "JSON at most 100 000)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    time_from = parse_time(args.time_from) if args.time_from else None
    time_to = parse_time(args.time_to) if args.time_to else None
    settings = settings_of(args)
    parsed = parse_query(args.query)
    limit = fetch_limit(args.limit, args.format)
    for word in lowercase_operators(args.query):
        warn(f"'{word}' is searched for as a word: Lucene's operators are upper case "
             f"({word.upper()})")
    store = settings.store.build(settings.data_dir)
    try:
        for name in sorted(fields_of(parsed)):
            if not store.search(Exists(name), "events", None, None, 1):
                warn(f"no stored event has the field {name}; is it spelled as stored "
                     "(e.g. user.name, kubernetes.audit.verb)?")
        query = without_own_audit(parsed)
        # Results counted before printing and recorded: a reader that stops early (`| head`)
        # has still searched. JSON is streamed (up to 100 000 documents), a table is held.
        results = min(limit, store.count(query, "events", time_from, time_to))
        record(settings, "search", {"query": args.query, **period(time_from, time_to),
                                    "limit": args.limit, "results": results})
        printed = print_docs(store.stream(query, "events", time_from, time_to, limit),
                             args.format, "events", COLUMNS)
    finally:
        store.close()
    cut_note(args.limit, args.format, printed)
    return 0


def warn(message: str) -> None:
    print(f"ctrail: warning: {message}", file=sys.stderr)


def lowercase_operators(text: str) -> list[str]:
    """The bare lower-case and/or/not between terms (outside quotes): Lucene reads them as words
    to search for, which is rarely what was meant."""
    bare = QUOTED.sub("_", text)          # a phrase is a term too
    return sorted({m.group(1) or m.group(2) for m in LOWERCASE_OPERATOR.finditer(bare)})


def fields_of(query: Query) -> set[str]:
    """The field names a query tests (not @timestamp, which every event has)."""
    match query:
        case And(children) | Or(children):
            return set().union(*(fields_of(child) for child in children))
        case Not(child):
            return fields_of(child)
        case Equals(field) | Wildcard(field) | Regex(field) | Exists(field) | Range(field):
            return set() if field == TIMESTAMP else {field}
    return set()


def without_own_audit(query: Query) -> Query:
    """Our own audit records (who searched, exported, changed rules) are left out of results
    unless the query asks for their dataset."""
    if OWN_AUDIT in fields_values(query):
        return query
    return And((query, Not(Equals("event.dataset", OWN_AUDIT))))


def fields_values(query: Query) -> set[str]:
    match query:
        case And(children) | Or(children):
            return set().union(*(fields_values(child) for child in children))
        case Not(child):
            return fields_values(child)
        case Equals("event.dataset", value):
            return {value}
    return set()
