"""The embedded store's own layout (schema 3): the raw record kept once, an alert's raw record
taken from its event, free text from chosen fields, and a v2 store migrated in place."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ctrail.bus.codec import encode
from ctrail.event import Alert, AlertInfo, EventInfo, Rejection, Rule
from sinks.sqlite.search import HOT
from sinks.sqlite.store import COLUMNS, SCHEMA_VERSION, SqliteStore
from tests.contract.test_store import EVENTS


def as_stored(item: object) -> dict:  # type: ignore[type-arg]
    return orjson.loads(encode(item))  # type: ignore[arg-type]


def alert_of(event_index: int, original: str | None = None) -> Alert:
    event = EVENTS[event_index]
    return Alert(
        timestamp=event.timestamp,
        event=EventInfo(id=f"alert-{event_index}", kind="alert", action="CT-TEST-1",
                        dataset="containertrail.alerts", module="containertrail",
                        original=event.event.original if original is None else original,
                        ingested=event.event.ingested),
        rule=Rule(id="CT-TEST-1", name="Secrets read by a human"),
        alert=AlertInfo(severity="high", group_key="CT-TEST-1|alice",
                        event_ids=(event.event.id,)),
        user=event.user, kubernetes=event.kubernetes.model_copy(update={"audit": None}))


def test_an_audit_line_keeps_its_raw_record_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.write(EVENTS)
    rows = store._db.execute("SELECT audit, doc FROM events").fetchall()
    assert all(audit == "" and '"audit"' not in doc for audit, doc in rows)
    assert [as_stored(e) for e in EVENTS] == store.search("*", limit=10)
    # Byte for byte as the bus carried it, key order included.
    assert orjson.dumps(store.search("user.name:bob")[0]) == encode(EVENTS[2])


def test_an_audit_record_that_is_not_the_line_is_kept(tmp_path: Path) -> None:
    event = EVENTS[0]
    changed = {**event.kubernetes.audit, "verb": "watch"}      # e.g. redacted, or an envelope
    other = event.model_copy(update={
        "event": event.event.model_copy(update={"id": "other"}),
        "kubernetes": event.kubernetes.model_copy(update={"audit": changed})})
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.write([other])
    (audit,) = store._db.execute("SELECT audit FROM events").fetchone()
    assert orjson.loads(audit) == changed
    assert store.search("*") == [as_stored(other)]
    assert store.count("kubernetes.audit.verb:watch") == 1
    assert store.count("kubernetes.audit.verb:get") == 0


def test_an_alert_refers_to_its_stored_events_raw_record(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    early = alert_of(1)                       # its event is not stored yet: keeps its own
    store.write([early])
    store.write(EVENTS)
    stored, loose = alert_of(0), alert_of(2, original="something else")
    store.write([stored, loose])
    rows = dict(store._db.execute("SELECT id, original IS NULL FROM alerts").fetchall())
    assert rows == {"alert-1": 0, "alert-0": 1, "alert-2": 0}
    found = store.search("*", "alerts", limit=10)
    assert found == [as_stored(a) for a in (stored, early, loose)]
    assert store.count("event.original:*000000000001*", "alerts") == 1    # read from the event
    assert store.count("_exists_:event.original", "alerts") == 3
    assert store.count("secrets", "alerts") == 3          # rule name: free text


def test_a_batch_repeating_an_id_stores_and_indexes_it_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.write([EVENTS[3], EVENTS[3], EVENTS[3]])
    assert store.count("*") == 1
    assert store.count("checkout") == 1
    assert store.count("checkout AND user.name:*") == 1


def test_hot_columns_match_the_schema(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    for kind, columns in COLUMNS.items():
        declared = [row[1] for row in store._db.execute(f"PRAGMA table_info({kind})")]
        assert set(columns) | {"seq"} == set(declared), kind
        assert set(HOT[kind].values()) <= set(declared)


V2 = """
CREATE TABLE {kind} (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
                     doc TEXT NOT NULL);
CREATE INDEX {kind}_ts ON {kind} (ts);
CREATE VIRTUAL TABLE {kind}_text USING fts5 (body, content = '');
"""


def test_a_v2_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    dead = Rejection(id="r1", timestamp=datetime(2026, 3, 5, tzinfo=timezone.utc),
                     stage="collect", reason="invalid_json", detail="unexpected end",
                     origin="audit.log:7", original='{"kind": "Ev')
    with sqlite3.connect(path) as db:
        for kind in ("events", "alerts", "dead_letters", "dead_letter_replays"):
            db.executescript(V2.format(kind=kind))
        db.execute("CREATE INDEX events_user ON events (json_extract(doc, '$.user.name'))")
        for n, item in enumerate([*EVENTS, alert_of(0), dead]):
            kind = {"Event": "events", "Alert": "alerts"}.get(type(item).__name__,
                                                                "dead_letters")
            db.execute(f"INSERT INTO {kind} (id, ts, doc) VALUES (?, ?, ?)",
                       (f"{kind}-{n}", n, encode(item).decode()))
        db.execute("PRAGMA user_version = 2")
    store = SqliteStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert store.search("*", limit=10) == [as_stored(e) for e in EVENTS]
    assert store.count("user.name:alice AND event.action:delete") == 1
    assert store.count("checkout") == 1
    assert store.search("*", "alerts") == [as_stored(alert_of(0))]
    assert store.count("reason:invalid_json", "dead_letters") == 1
    tables = {name for (name,) in store._db.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("v2_") for name in tables)
    store.close()
    assert SqliteStore(path).count("*") == len(EVENTS)     # opens again as it is


# -- issue 14: *:*, queries at the size bounds, and regular expressions that cannot hang --------

def test_star_colon_star_and_queries_at_the_bounds_are_answered(tmp_path: Path) -> None:
    from ctrail.query import MAX_DEPTH, MAX_TERMS
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.write(EVENTS)
    everything = store.search("*", limit=100)
    assert everything and store.search("*:*", limit=100) == everything
    widest = " OR ".join(["user.name:bob"] * (MAX_TERMS - 1) + ["forbidden"])
    assert store.search(widest, limit=100)
    deepest = "NOT " * (MAX_DEPTH - 2) + "user.name:bob"   # an even number of NOTs
    assert store.search(deepest, limit=100) == store.search("user.name:bob", limit=100)


def _in_a_child(code: str) -> None:
    """Run `code` in a child process: with a backtracking engine it would never return (a C
    loop no timeout interrupts), so it must end within the time limit to pass."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_catastrophic_regular_expression_does_not_hang() -> None:
    _in_a_child("from sinks.sqlite.search import regexp\n"
                "assert not regexp('(a+)+b', 'a' * 100_000)\n"
                "assert regexp('(a+)+b', 'a' * 100_000 + 'b')\n"
                "assert not regexp('(x+x+)+y', 'x' * 5000)\n")


def test_a_search_with_a_catastrophic_regular_expression_is_answered(tmp_path: Path) -> None:
    _in_a_child(f"""
import time
from pathlib import Path
from sinks.sqlite.store import SqliteStore
from tests.contract.test_store import EVENTS
store = SqliteStore(Path({str(tmp_path)!r}) / "s.sqlite3")
event = EVENTS[2]
user = event.user.model_copy(update={{"name": "a" * 50_000}})
store.write([event.model_copy(update={{"user": user}})])
started = time.monotonic()
assert store.search("user.name:/(a+)+b/", limit=10) == []
assert len(store.search("user.name:/(a+)+/", limit=10)) == 1
assert time.monotonic() - started < 5
""")


def test_a_pattern_re2_cannot_run_is_a_query_error(tmp_path: Path) -> None:
    import pytest

    from ctrail.errors import QueryError
    store = SqliteStore(tmp_path / "s.sqlite3")
    with pytest.raises(QueryError, match="not a regular expression"):
        store.search("user.name:/(a)\\1/", limit=1)       # a backreference: RE2 has none
