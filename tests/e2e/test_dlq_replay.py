"""`ctrail dlq replay`: dead letters back to the stage that rejected them, after a fix.

Records now accepted are stored once and their dead letters stop standing; records rejected
again stay dead-lettered with their new reason; a second replay stores nothing twice; a dry run
changes nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.bus.codec import encode
from ctrail.components import RawRecord
from ctrail.errors import Reason
from ctrail.runtime.deadletter import rejection
from ctrail.settings import load_settings

# A user ingests Falco's JSON alerts with `--source k8s-audit` by mistake: the fix is the
# right source. Two lines are bad for any parser, one of them for a different reason under
# the right one (a Falco alert whose time is not a time).
BAD_JSON = b'{"rule": "Terminal shell in container", "output":'
BAD_TIME = (b'{"rule":"Terminal shell in container","output":"a shell","priority":"Notice",'
            b'"time":"yesterday"}')
AUDIT_LINE = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"r1","verb":"delete",'
              b'"stage":"ResponseComplete","requestReceivedTimestamp":"2026-03-01T10:00:00Z",'
              b'"user":{"username":"bob"},"objectRef":{"resource":"secrets","namespace":"prod",'
              b'"name":"db"}}')


@pytest.fixture
def falco_lines(real_data: Path) -> list[bytes]:
    return (real_data / "falco-alerts-json/falco_website_alerts.jsonl").read_bytes().splitlines()[:3]


@pytest.fixture
def wrong_source(ctrail, tmp_path: Path, falco_lines: list[bytes]) -> Path:  # type: ignore[no-untyped-def]
    """A file of Falco alerts (and two bad lines) ingested as Kubernetes audit."""
    mixed = tmp_path / "falco.jsonl"
    mixed.write_bytes(b"\n".join([*falco_lines, BAD_JSON, BAD_TIME]) + b"\n")
    ingested = ctrail("ingest", "--source", "k8s-audit", str(mixed))
    assert ingested.out.strip() == "0 accepted, 5 dead-lettered"
    return mixed


def rows(data_dir: Path, table: str) -> list[str]:
    """The ids a store table holds; for events, leaving out our own audit records."""
    audit = "dataset = 'containertrail.audit'"
    where = f"WHERE NOT {audit}" if table == "events" else ""
    with sqlite3.connect(data_dir / "store.sqlite3") as db:
        return sorted(row[0] for row in db.execute(f"SELECT id FROM {table} {where}"))


def test_replay_with_the_right_source_stores_the_records_and_keeps_the_bad_ones(
        ctrail, wrong_source: Path, falco_lines: list[bytes], tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    replayed = ctrail("dlq", "replay", "--source", "falco")
    assert (replayed.status, replayed.out.strip()) == (0, "3 replayed, 2 still rejected")

    stored = ctrail("search", "event.dataset:falco.alerts", "--format", "json").json_lines()
    assert sorted(d["event"]["original"].encode() for d in stored) == sorted(falco_lines)

    standing = ctrail("dlq", "list", "--format", "json").json_lines()
    assert sorted((d["origin"], d["reason"]) for d in standing) == [
        (f"{wrong_source}:4", "invalid_json"),          # the same reason: the same dead letter
        (f"{wrong_source}:5", "invalid_timestamp")]     # kept anew under its new reason
    assert {d["original"].encode() for d in standing} == {BAD_JSON, BAD_TIME}

    everything = ctrail("dlq", "list", "--all", "--format", "json").json_lines()
    verdicts = sorted(d["replay"]["outcome"] for d in everything if "replay" in d)
    # The newest verdict of each: the bad JSON stands again, the bad time's first dead letter
    # is replaced by its successor, which stands.
    assert verdicts == ["rejected_again", "reopened", "reopened",
                        "succeeded", "succeeded", "succeeded"]
    assert len(everything) == 6


def test_replaying_again_stores_nothing_twice(ctrail, wrong_source: Path,  # type: ignore[no-untyped-def]
                                              tmp_data_dir: Path) -> None:
    assert ctrail("dlq", "replay", "--source", "falco").status == 0
    before = {table: rows(tmp_data_dir, table) for table in ("events", "dead_letters")}
    standing = ctrail("dlq", "list", "--format", "json").json_lines()

    again = ctrail("dlq", "replay", "--source", "falco")
    assert (again.status, again.out.strip()) == (0, "0 replayed, 2 still rejected")
    everything = ctrail("dlq", "replay", "--source", "falco", "--all")
    assert (everything.status, everything.out.strip()) == (0, "3 replayed, 3 still rejected")

    assert {table: rows(tmp_data_dir, table) for table in before} == before
    assert ctrail("dlq", "list", "--format", "json").json_lines() == standing


def test_a_record_replayed_back_to_an_earlier_rejection_stands_again(
        ctrail, wrong_source: Path) -> None:  # type: ignore[no-untyped-def]
    """A is replayed with another parser and rejected as B; B replayed with the first parser
    is rejected as A again (same id): A must stand, not stay hidden by its old verdict."""
    def standing() -> list[tuple[str, str]]:
        return sorted((d["origin"], d["reason"])
                      for d in ctrail("dlq", "list", "--format", "json").json_lines())
    first = standing()
    assert ctrail("dlq", "replay", "--source", "falco").status == 0
    assert (f"{wrong_source}:5", "invalid_timestamp") in standing()
    back = ctrail("dlq", "replay", "--source", "k8s-audit", "reason:invalid_timestamp")
    assert (back.status, back.out.strip()) == (0, "0 replayed, 1 still rejected")
    assert standing() == [row for row in first if row[0].endswith((":4", ":5"))]


def test_a_record_cut_at_the_size_limit_is_not_replayed(ctrail, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         tmp_data_dir: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("pipeline: {max_record_bytes: 300}\n")
    big = tmp_path / "big.log"
    big.write_bytes(AUDIT_LINE[:-1] + b',"annotations":{"note":"' + b"x" * 400 + b'"}}\n')
    ingested = ctrail("ingest", "--source", "k8s-audit", str(big), "--config", str(config))
    assert ingested.out.strip() == "0 accepted, 1 dead-lettered"

    replayed = ctrail("dlq", "replay", "--config", str(config))
    assert (replayed.status, replayed.out.strip()) == (1, "0 replayed, 0 still rejected, "
                                                          "1 not replayed")
    assert "only the start of this record was kept" in replayed.err
    assert [d["reason"] for d in ctrail("dlq", "list", "--format", "json").json_lines()] == [
        "record_too_large"]


def test_each_replay_is_in_our_audit_trail(ctrail, wrong_source: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert ctrail("dlq", "replay", "--source", "falco", "reason:schema_mismatch").status == 0
    valid = tmp_path / "audit.log"
    valid.write_bytes(AUDIT_LINE + b"\n")
    ctrail("ingest", "--source", "k8s-audit", str(valid))     # a pipeline run stores the record

    (audit,) = ctrail("search", "event.dataset:containertrail.audit AND event.action:dlq-replay",
                      "--format", "json").json_lines()
    assert audit["event"]["dataset"] == "containertrail.audit"
    assert '"query":"reason:schema_mismatch"' in audit["event"]["original"]
    assert '"replayed":3' in audit["event"]["original"]


def test_a_dry_run_says_what_would_happen_and_changes_nothing(
        ctrail, wrong_source: Path, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before = _fingerprint(tmp_data_dir)
    stored = {table: rows(tmp_data_dir, table) for table in ("events", "dead_letters")}

    plan = ctrail("dlq", "replay", "--source", "falco", "--dry-run")
    assert plan.status == 0
    assert plan.out.strip().splitlines()[-1] == (
        "dry run: 3 would be replayed, 2 would still be rejected, 0 would go back to their "
        "stage, 0 cannot be replayed; nothing was changed")
    planned = ctrail("dlq", "replay", "--source", "falco", "--dry-run", "--format", "json")
    expected = sorted(d["replay"]["expected"] for d in planned.json_lines())
    assert expected == ["replayed (1 events)"] * 3 + ["still rejected: invalid_json",
                                                      "still rejected: invalid_timestamp"]

    assert _fingerprint(tmp_data_dir) == before
    assert {table: rows(tmp_data_dir, table) for table in stored} == stored
    assert rows(tmp_data_dir, "dead_letter_replays") == []


def _fingerprint(data_dir: Path) -> dict[str, str]:
    """Every file of the data directory but the store's (SQLite touches its own on reading)."""
    return {str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(data_dir.rglob("*"))
            if path.is_file() and not path.name.startswith("store.sqlite3")}


def test_items_a_later_stage_rejected_go_back_to_that_stage(ctrail, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Dead letters as the stage runner makes them: an enrich bug (since fixed) on a good event,
    and bytes on ctrail.events that are no event at all."""
    (event,) = K8sAuditParser().parse(RawRecord(AUDIT_LINE, "audit.log:1",
                                                datetime.now(timezone.utc)))
    enrich_bug = rejection(stage="enrich", reason=Reason.STAGE_ERROR, detail="KeyError: 'pod'",
                           origin=f"enrich {event.key}", raw=encode(event),
                           dataset=event.event.dataset)
    garbage = rejection(stage="detect", reason=Reason.UNDECODABLE, detail="not an event",
                        origin="ctrail.events@42", raw=b'{"not": "an event"}', dataset=None)
    _store(tmp_data_dir, [enrich_bug, garbage])

    replayed = ctrail("dlq", "replay")
    assert (replayed.status, replayed.out.strip()) == (0, "1 replayed, 1 still rejected")
    (stored,) = ctrail("search", f"event.id:{event.event.id}", "--format", "json").json_lines()
    assert stored["event"]["original"].encode() == AUDIT_LINE
    (standing,) = ctrail("dlq", "list", "--format", "json").json_lines()
    assert standing["id"] == garbage.id


def test_a_dead_letter_that_cannot_be_replayed_fails_the_command(ctrail, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    unknown = rejection(stage="collect", reason=Reason.SCHEMA_MISMATCH, detail="?",
                        origin="syslog.log:3", raw=b"<13>hello", dataset="syslog.messages")
    _store(tmp_data_dir, [unknown])

    replayed = ctrail("dlq", "replay")
    assert (replayed.status, replayed.out.strip()) == (1, "0 replayed, 0 still rejected, "
                                                          "1 not replayed")
    assert f"dead letter {unknown.id} (syslog.log:3) was not replayed: no parser" in replayed.err
    assert [d["id"] for d in ctrail("dlq", "list", "--format", "json").json_lines()] == [unknown.id]


def _store(data_dir: Path, items: list) -> None:  # type: ignore[type-arg]
    store = load_settings(None, data_dir).store.build(data_dir)
    try:
        store.write(items)
    finally:
        store.close()
