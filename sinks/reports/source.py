"""What a report reads: documents and counts from the configured store (Store protocol), in an
order that does not depend on which store answered, cut at `max_rows` the same way on each.

Stores agree on which documents match and on their @timestamp order; they break ties
differently (SQLite by arrival, Elasticsearch by id), and a report built from that order (first
sighting, which stage of a request is kept, row order) would then differ between embedded and
distributed mode. So every list is re-sorted here by (@timestamp, id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from ctrail.components import Store
from sinks.reports.data import get, when


@dataclass(frozen=True)
class Truncation:
    """A query that matched more than max_rows documents: only those after `after` were read."""

    query: str
    kind: str
    matched: int
    after: datetime


@dataclass
class Source:
    """A store and a period [time_from, time_to); records the queries cut at `max_rows`."""

    store: Store
    time_from: datetime
    time_to: datetime
    max_rows: int
    # Events are shown with what the entity graph knows today (enrich.today.explain), as
    # `ctrail timeline` shows them: who pushed an image may have become known after the deploy.
    explain: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    truncated: list[Truncation] = field(default_factory=list)

    def docs(self, query: str, kind: str = "events") -> list[dict[str, Any]]:
        """Every matching document, oldest first, ties by id; at most `max_rows`, the newest.

        Past max_rows, the cut falls between two instants: documents at the instant where the
        store stopped are dropped too, because each store picks a different part of a tie there.
        The report then covers (cut, time_to) whole, on every store, and says so."""
        # Stores page through their own search windows (Elasticsearch returns 10 000 hits a
        # request and the store follows search_after), so one call reads up to max_rows + 1;
        # the extra one only tells "exactly max_rows" from "more".
        found = sorted(self.store.search(query, kind, self.time_from, self.time_to,
                                         self.max_rows + 1), key=report_order)
        if kind == "events" and self.explain is not None:
            found = [self.explain(doc) for doc in found]
        if len(found) <= self.max_rows:
            return found
        cut = when(found[0])
        self.truncated.append(Truncation(query, kind, self.count(query, kind), cut))
        return [doc for doc in found if when(doc) > cut]

    def count(self, query: str, kind: str = "events") -> int:
        """How many documents match in the period: exact, however many there are."""
        return self.store.count(query, kind, self.time_from, self.time_to)


def report_order(doc: dict[str, Any]) -> tuple[datetime, str]:
    """@timestamp, then the document's id (events and alerts: event.id; dead letters: id)."""
    return when(doc), get(doc, "event.id") or doc.get("id") or ""
