"""What reports read does not depend on the order a store received (or returns) documents in:
ties on @timestamp are ordered by id, one request is one row, and a cut at max_rows falls
between two instants. Over the real SQLite store, with events parsed from the real samples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event
from sinks.reports.data import unique_requests, user_of
from sinks.reports.source import Source, report_order
from sinks.sqlite.store import SqliteStore

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "k8s-audit"
# Falco's traces: one request edited into another user's, same auditID and instant.
SAME_AUDIT_ID = ("anonymous_creates_namespace_foo.json", "some-user_creates_namespace_foo.json")
PERIOD = (datetime(2018, 10, 1, tzinfo=timezone.utc), datetime(2018, 11, 1, tzinfo=timezone.utc))


def parse(record: dict[str, Any], origin: str = "audit.log:1") -> Event:
    (event,) = K8sAuditParser().parse(RawRecord(orjson.dumps(record), origin,
                                                datetime.now(timezone.utc)))
    return event


def sample(name: str) -> dict[str, Any]:
    return orjson.loads((SAMPLES / name).read_bytes().splitlines()[0])


def read(tmp_path: Path, events: list[Event], max_rows: int = 100
         ) -> tuple[list[dict[str, Any]], Source]:
    """Source.docs("*") over a new store that received `events` one write each, in this order."""
    store = SqliteStore(tmp_path / f"store-{len(list(tmp_path.iterdir()))}.sqlite3")
    try:
        for event in events:
            store.write([event])
        source = Source(store, *PERIOD, max_rows)
        return source.docs("*"), source
    finally:
        store.close()


def test_ties_come_in_id_order_whatever_order_the_store_received_them(tmp_path: Path) -> None:
    events = [parse(sample(name)) for name in SAME_AUDIT_ID]
    forwards, _ = read(tmp_path, events)
    backwards, _ = read(tmp_path, events[::-1])
    assert forwards == backwards
    assert [d["event"]["id"] for d in forwards] == sorted(e.event.id for e in events)


def test_records_sharing_an_auditid_but_not_a_user_are_two_requests(tmp_path: Path) -> None:
    docs, _ = read(tmp_path, [parse(sample(name)) for name in SAME_AUDIT_ID])
    assert sorted(user_of(d) for d in unique_requests(docs)) == ["some-user", "system:anonymous"]


@pytest.mark.parametrize("arrival", [("ResponseStarted", "ResponseComplete"),
                                     ("ResponseComplete", "ResponseStarted")])
def test_one_long_running_request_is_one_row_from_its_first_stage(arrival: tuple[str, str],
                                                                  tmp_path: Path) -> None:
    exec_record = sample("exec_pod.json")
    stages = [parse({**exec_record, "stage": stage}, f"audit.log:{i}")
              for i, stage in enumerate(arrival)]
    docs, _ = read(tmp_path, stages)
    (kept,) = unique_requests(docs)
    assert kept["kubernetes"]["audit"]["stage"] == "ResponseStarted"


def test_past_max_rows_the_cut_falls_between_instants_and_is_recorded(tmp_path: Path) -> None:
    base = sample("create_secret.json")
    at = [datetime(2018, 10, 25, 12, tzinfo=timezone.utc) + timedelta(seconds=s)
          for s in (0, 1, 1, 2, 3)]              # the second instant holds two requests
    events = [parse({**base, "auditID": f"id-{i}", "requestReceivedTimestamp": t.isoformat(),
                     "stageTimestamp": t.isoformat()}, f"audit.log:{i}")
              for i, t in enumerate(at)]
    docs, source = read(tmp_path, events, max_rows=3)
    # The newest 4 end inside the tie at 12:00:01, so all of that instant is left out.
    assert [d["kubernetes"]["audit"]["auditID"] for d in docs] == ["id-3", "id-4"]
    (cut,) = source.truncated
    assert (cut.query, cut.kind, cut.matched, cut.after) == ("*", "events", 5, at[1])


def test_exactly_max_rows_is_not_a_cut(tmp_path: Path) -> None:
    docs, source = read(tmp_path, [parse(sample(SAME_AUDIT_ID[0]))], max_rows=1)
    assert len(docs) == 1 and source.truncated == []


def test_report_order_reads_dead_letter_ids_too() -> None:
    doc = {"@timestamp": "2018-10-25T12:00:00Z", "id": "x"}
    assert report_order(doc) == (datetime(2018, 10, 25, 12, tzinfo=timezone.utc), "x")
