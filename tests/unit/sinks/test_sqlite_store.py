"""The embedded store's own layout (schema 4): the raw record kept once, an alert's raw record
taken from its event, free text from chosen fields, records compressed with a dictionary
trained on the store's rows, and v2 and v3 stores migrated in place."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import zstandard

from ctrail.bus.codec import encode
from ctrail.errors import Retryable
from ctrail.event import Alert, AlertInfo, Event, EventInfo, Rejection, Rule
from sinks.sqlite.records import TRAIN_ROWS, connect_read_only
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
    rows = store._db.execute("SELECT ct_audit(record), ct_doc(record) FROM events").fetchall()
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
    (audit,) = store._db.execute("SELECT ct_audit(record) FROM events").fetchone()
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
    rows = dict(store._db.execute("SELECT id, ct_original(record) IS NULL FROM alerts").fetchall())
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



V3 = """
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
                     action, user_name, dataset, original TEXT, audit TEXT, doc TEXT NOT NULL);
CREATE TABLE alerts (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
                     rule_id, original TEXT, original_of TEXT, audit TEXT, doc TEXT NOT NULL);
CREATE VIRTUAL TABLE events_text USING fts5 (body, content = '', columnsize = 0);
CREATE VIRTUAL TABLE alerts_text USING fts5 (body, content = '', columnsize = 0);
"""


def v3_parts(item: Event | Alert) -> str:
    """A v3 row's doc: the document without event.original and kubernetes.audit."""
    exclude = {"event": {"original"}, "kubernetes": {"audit"}}
    return item.__pydantic_serializer__.to_json(item, by_alias=True, exclude_none=True,
                                                exclude=exclude).decode()


def test_a_v3_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    alert = alert_of(0)
    with sqlite3.connect(path) as db:
        db.executescript(V3)
        for n, event in enumerate(EVENTS):     # audit '': the audit record is the line parsed
            db.execute("INSERT INTO events (id, ts, action, original, audit, doc) "
                       "VALUES (?, ?, ?, ?, '', ?)",
                       (event.event.id, n, event.event.action, event.event.original,
                        v3_parts(event)))
        db.execute("INSERT INTO alerts (id, ts, rule_id, original, original_of, audit, doc) "
                   "VALUES (?, 0, ?, NULL, ?, NULL, ?)",    # the raw record is its event's
                   (alert.event.id, alert.rule.id, EVENTS[0].event.id, v3_parts(alert)))
        db.execute("PRAGMA user_version = 3")
    store = SqliteStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert store.search("*", limit=10) == [as_stored(e) for e in EVENTS]
    assert store.search("*", "alerts") == [as_stored(alert)]
    assert store.count("kubernetes.audit.verb:delete AND user.name:alice") == 1
    assert store.count("event.original:*000000000001*", "alerts") == 1
    tables = {name for (name,) in store._db.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("v3_") for name in tables)
    assert store._db.execute("PRAGMA freelist_count").fetchone() == (0,)   # vacuumed


def many_events(count: int) -> list[Event]:
    """`count` distinct events shaped like the contract's (fresh ids and raw records)."""
    found = []
    for n in range(count):
        event = EVENTS[n % len(EVENTS)]
        record = {**event.kubernetes.audit, "auditID": f"{n:08d}-0000-0000-0000-000000000000"}
        original = orjson.dumps(record).decode()
        found.append(event.model_copy(update={
            "event": event.event.model_copy(update={"id": f"e{n:06d}", "original": original}),
            "kubernetes": event.kubernetes.model_copy(update={"audit": record})}))
    return found


def test_records_are_packed_with_a_dictionary_trained_on_the_stores_rows(tmp_path: Path) -> None:
    events = many_events(TRAIN_ROWS + 200)
    store = SqliteStore(tmp_path / "s.sqlite3")
    reader = SqliteStore(tmp_path / "s.sqlite3")       # opened before the dictionary exists
    store.write(events[:300])
    first = store._db.execute("SELECT sum(length(record)) FROM events").fetchone()[0]
    assert reader.count("*") == 300
    store.write(events[300:])                          # crosses TRAIN_ROWS: trains, repacks
    assert store._db.execute("SELECT kind FROM dictionaries").fetchall() == [("events",)]
    dictionaries = {row[0] for row in store._db.execute("SELECT substr(record, 1, 1) FROM events")}
    assert dictionaries == {bytes([1])}               # the rows before it packed again with it
    (data,) = store._db.execute("SELECT data FROM dictionaries").fetchone()
    (record,) = store._db.execute("SELECT record FROM events LIMIT 1").fetchone()
    named = zstandard.get_frame_parameters(record[1:]).dict_id    # readable by any zstd tool
    assert named == zstandard.ZstdCompressionDict(data).dict_id() != 0
    packed = store._db.execute("SELECT sum(length(record)) FROM events WHERE seq <= 300")
    assert packed.fetchone()[0] < first / 2
    expected = {e.event.id: as_stored(e) for e in events}
    for searcher in (store, reader):                   # the reader loads the new dictionary
        found = searcher.search("*", limit=len(events))
        assert {doc["event"]["id"]: doc for doc in found} == expected
    assert reader.count("kubernetes.audit.auditID:00000007-*") == 1
    with connect_read_only(tmp_path / "s.sqlite3") as db:
        (name,) = db.execute("SELECT json_extract(ct_doc(record), '$.user.name') FROM events "
                             "WHERE id = 'e000002'").fetchone()
    assert name == "bob"


def test_a_dictionary_trained_in_a_write_that_fails_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sinks.sqlite.store as module
    events = many_events(TRAIN_ROWS)
    store = SqliteStore(tmp_path / "s.sqlite3")
    monkeypatch.setitem(module.INSERT, "events", "INSERT INTO nowhere VALUES (?)")
    with pytest.raises(Retryable):          # trains, then fails: the transaction rolls back
        store.write(events)
    monkeypatch.undo()
    store.write(events)
    (number,) = store._db.execute("SELECT id FROM dictionaries").fetchone()
    packed = {row[0] for row in store._db.execute("SELECT substr(record, 1, 1) FROM events")}
    assert packed == {bytes([number])}
    with connect_read_only(tmp_path / "s.sqlite3") as db:   # what another process reads
        assert db.execute("SELECT count(ct_doc(record)) FROM events").fetchone() == (TRAIN_ROWS,)

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
