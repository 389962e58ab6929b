"""Retention on a simulated clock: only expired, unheld segments go, each leaving a signed
tombstone in the chain; legal holds keep segments by time range or by subject."""

from __future__ import annotations

from datetime import timedelta

from evidence_support import T0, make_event
from sinks.evidence.retention import expire
from sinks.evidence.verify import load_public_key, verify

DAY = timedelta(days=1)


def three_days(archive) -> None:  # type: ignore[no-untyped-def]
    """Audit events on day 0 (alice), day 1 (bob), day 2 (carol); alerts are kept longer."""
    for day, user in enumerate(("alice", "bob", "carol")):
        archive.write([make_event(day, T0 + day * DAY, user=user)])
    archive.write([make_event(9, T0, dataset="docker.events")])   # runtime class
    archive.seal_all()


def segment_files(archive) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.name for p in (archive.root / "segments").glob("*.jsonl.gz"))


def test_expiry_removes_only_expired_segments_and_leaves_a_signed_tombstone(
        open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive(retention={"audit_days": 10, "runtime_days": 30})
    three_days(archive)
    clock.now = T0 + 10 * DAY                            # day 0 ends T0+1h: kept to T0+10d+1h
    assert expire(archive).deleted == []
    clock.now = T0 + 10 * DAY + timedelta(hours=2)
    assert expire(archive).deleted == [1]                # seq 1 is day 0
    clock.now = T0 + 12 * DAY
    result = expire(archive)
    assert result.deleted == [3]                         # seq 3 is day 1; seq 2 is runtime
    assert segment_files(archive) == ["00000002.jsonl.gz", "00000004.jsonl.gz"]
    tombstone = result.tombstone
    assert tombstone is not None and tombstone["type"] == "tombstone"
    assert [d["first_id"] for d in tombstone["deleted"]] == ["ev00001"]
    assert tombstone["signature"]
    key = load_public_key((archive.root / "public_key.pem").read_bytes())
    outcome = verify(archive.root, key)
    assert outcome.ok and outcome.tombstoned == 2 and outcome.segments == 2
    assert expire(archive).deleted == []                 # idempotent: nothing more is due


def test_a_legal_hold_by_time_range_keeps_its_segments(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    hold = {"name": "case-17", "from": (T0 + DAY).isoformat(), "to": (T0 + 2 * DAY).isoformat()}
    archive = open_archive(retention={"audit_days": 1, "runtime_days": 1},
                           legal_holds=[hold])
    three_days(archive)
    clock.now = T0 + 30 * DAY
    result = expire(archive)
    assert result.held == {3: "case-17"}
    assert segment_files(archive) == ["00000003.jsonl.gz"]


def test_a_legal_hold_by_subject_keeps_segments_holding_that_subject(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive(retention={"audit_days": 1, "runtime_days": 1},
                           legal_holds=[{"name": "hr-4", "subject": "user.name:carol"}])
    three_days(archive)
    clock.now = T0 + 30 * DAY
    assert expire(archive).held == {4: "hr-4"}
    assert segment_files(archive) == ["00000004.jsonl.gz"]
    assert verify(archive.root).ok
