"""`ctrail timeline --container ID | --pod NS/NAME | --image REF_OR_DIGEST | --user NAME`.

The subject's identity is resolved from the stored facts (the `ctrail.entities` topic, read from
its start without committing: this is a separate process from the enricher), not only from the
fields its events were enriched with at ingest, so events that arrived before their facts are
found and explained too. Its events come from whichever store is configured, found with a query
built from that identity (enrich.timeline plans both), sorted by time, and shown with what the
graph knows now filled in. This module parses the arguments and prints.
"""

from __future__ import annotations

import argparse
import sys
from itertools import groupby
from typing import Any, Final, Iterable, Iterator

import orjson
from rich.console import Console
from rich.table import Table

from ctrail.audit.trail import record
from ctrail.cli.common import add_common, cut_note, fetch_limit, print_docs, settings_of
from ctrail.errors import UsageError
from ctrail.event import stored_instant
from enrich.graph import EntityGraph
from enrich.timeline import for_container, for_image, for_pod, for_user
from enrich.today import explain, load_graph

COLUMNS: Final = (
    ("@timestamp", "@timestamp"), ("dataset", "event.dataset"), ("action", "event.action"),
    ("user", "user.name"), ("container", "container.id"), ("pod", "kubernetes.pod.name"),
    ("node", "kubernetes.node.name"), ("image digest", "container.image.hash.all"),
    ("message", "message"),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("timeline", help="a container's, pod's, image's or user's "
                                 "resolved identity and its events in time order")
    subject = parser.add_mutually_exclusive_group(required=True)
    subject.add_argument("--container", metavar="ID", help="container id, full or short")
    subject.add_argument("--pod", metavar="NS/NAME", help="namespace/pod name")
    subject.add_argument("--image", metavar="REF_OR_DIGEST",
                         help="image reference (repository:tag) or manifest digest (sha256:...)")
    subject.add_argument("--user", metavar="NAME", help="user name, as the sources give it")
    parser.add_argument("--limit", type=int, default=10_000,
                        help="most events to print (default 10 000; a table at most 1 000, "
                             "JSON at most 100 000)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    limit = fetch_limit(args.limit, args.format)
    graph = load_graph(settings)
    subject, query = plan(graph, args)
    # Nothing known to search for: the subject alone, and no store to open.
    store = settings.store.build(settings.data_dir) if query else None
    try:
        results = min(limit, store.count(query, "events")) if store else 0
        # Recorded before printing: a reader that stops early (`| head`) has still looked.
        record(settings, "timeline", {"subject": subject["type"], "query": subject["query"],
                                      "limit": args.limit, "results": results})
        if args.format == "json":
            out = sys.stdout.buffer
            out.write(orjson.dumps({"subject": subject}) + b"\n")
            out.flush()
        elif not results and not known(subject):
            print(f"Nothing is known about {subject['type']} {subject['query']}: "
                  "no facts, no events.")
            return 0
        else:
            print_subject(subject)
        found = store.stream(query, "events", None, None, limit) if store else iter(())
        printed = print_docs(in_time_order(explain(graph, doc) for doc in found),
                             args.format, "events", COLUMNS)
    finally:
        if store is not None:
            store.close()
    cut_note(args.limit, args.format, printed)
    return 0


def in_time_order(docs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The stored events in the timeline's order: by instant, then event id, as it comes.

    Both stores stream oldest first by instant (SQLite by microseconds, Elasticsearch by
    date_nanos) but break ties differently (SQLite by arrival, Elasticsearch by event id):
    only the events of one instant are held and sorted, so both stores answer alike and memory
    holds the largest burst of one instant (at most the capped --limit), not every event."""
    for _instant, same in groupby(docs, key=lambda d: stored_instant(d.get("@timestamp"))):
        yield from sorted(same, key=lambda d: str((d.get("event") or {}).get("id")))


def known(subject: dict[str, Any]) -> bool:
    """Whether the graph resolved anything about the subject (beyond what was asked)."""
    return any(value not in (None, [], {}) for name, value in subject.items()
               if name not in ("type", "query"))


def plan(graph: EntityGraph, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(the subject as resolved, the store query for its events)."""
    if args.container:
        return for_container(graph, args.container)
    if args.pod:
        namespace, sep, name = args.pod.partition("/")
        if not sep or not namespace or not name:
            raise UsageError(f"--pod takes NAMESPACE/NAME, not {args.pod!r}")
        return for_pod(graph, namespace, name)
    if args.image:
        return for_image(graph, args.image)
    return for_user(graph, args.user)


def print_subject(subject: dict[str, Any]) -> None:
    table = Table(title=f"{subject['type']} {subject['query']}", title_justify="left",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in subject.items():
        if name in ("type", "query") or value in (None, [], {}):
            continue
        table.add_row(name, value if isinstance(value, str) else orjson.dumps(value).decode())
    width = None if sys.stdout.isatty() else 100_000
    Console(soft_wrap=False, width=width).print(table)
