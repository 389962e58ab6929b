"""The archive: sealed segments form a signed hash chain; at-least-once delivery adds nothing
twice; late events get a chained late segment; a crash mid-write loses nothing acked."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest

from ctrail.errors import Unavailable
from evidence_support import T0, make_event
from sinks.evidence.verify import GENESIS, load_public_key, manifest_hash, verify


def manifests(archive):  # type: ignore[no-untyped-def]
    return archive.chain.manifests()


def records(archive, seq: int) -> list[str]:  # type: ignore[no-untyped-def]
    data = gzip.decompress((archive.root / f"segments/{seq:08d}.jsonl.gz").read_bytes())
    return [json.loads(line)["event"]["id"] for line in data.splitlines()]


def test_sealed_segments_form_a_signed_chain(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(i, T0 + timedelta(minutes=20 * i)) for i in range(6)])
    assert archive.open and not manifests(archive)        # the hours have not ended yet
    clock.advance(hours=3)
    assert archive.seal_due() == 2
    first, second = manifests(archive)
    assert (first["prev"], second["prev"]) == (GENESIS, manifest_hash(first))
    assert (first["records"], first["first_id"], first["last_id"]) == (3, "ev00000", "ev00002")
    assert (second["bucket"], second["data_class"]) == ("2026-01-05T11:00:00Z", "audit")
    key = load_public_key((archive.root / "public_key.pem").read_bytes())
    result = verify(archive.root, key)
    assert result.ok and (result.segments, result.records) == (2, 6)


def test_a_redelivered_event_is_archived_once(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    batch = [make_event(i, T0) for i in range(3)]
    archive.write(batch + batch[:1])                       # duplicate inside a batch
    archive.write(batch)                                   # the whole batch redelivered
    clock.advance(hours=2)
    archive.seal_due()
    archive.write(batch)                                   # redelivered after sealing
    archive.seal_all()
    assert [m["records"] for m in manifests(archive)] == [3]
    assert records(archive, 1) == ["ev00000", "ev00001", "ev00002"]


def test_an_event_for_a_sealed_bucket_goes_to_a_chained_late_segment(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(1, T0)])
    clock.advance(hours=2)
    archive.seal_due()
    archive.write([make_event(2, T0 + timedelta(minutes=5))])    # arrives late
    first, late = manifests(archive)
    assert (late["bucket"], late["part"], late["late"]) == (first["bucket"], 1, True)
    assert late["prev"] == manifest_hash(first)
    assert records(archive, 2) == ["ev00002"]
    assert verify(archive.root).ok


def test_data_classes_get_segments_of_their_own(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(1, T0), make_event(2, T0, dataset="docker.events")])
    archive.seal_all()
    assert sorted(m["data_class"] for m in manifests(archive)) == ["audit", "runtime"]


def test_a_torn_last_line_is_cut_and_writing_resumes(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(1, T0), make_event(2, T0)])
    archive.close()
    (path,) = (archive.root / "open").glob("*.jsonl")
    with open(path, "ab") as out:
        out.write(b'{"@timestamp": "2026-01-05T10:00:00Z", "event": {"id": "ev0')   # kill -9
    archive = open_archive()
    archive.write([make_event(2, T0), make_event(3, T0)])
    archive.seal_all()
    assert records(archive, 1) == ["ev00001", "ev00002", "ev00003"]
    assert verify(archive.root).ok


def test_a_crash_after_sealing_does_not_seal_twice(open_archive, clock) -> None:  # type: ignore[no-untyped-def]
    archive = open_archive()
    archive.write([make_event(1, T0)])
    (path,) = (archive.root / "open").glob("*.jsonl")
    kept = path.read_bytes()
    archive.seal_all()
    archive.close()
    path.write_bytes(kept)                 # as if the process died before removing it
    archive = open_archive()
    assert not archive.open and len(manifests(archive)) == 1


def test_one_process_writes_an_archive(open_archive) -> None:  # type: ignore[no-untyped-def]
    open_archive()
    with pytest.raises(Unavailable, match="being written by another process"):
        open_archive()
