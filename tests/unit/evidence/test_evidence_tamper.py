"""Tampering with a sealed archive is found, and each changed record is named by its event id."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

import pytest

from evidence_support import T0, make_event
from sinks.evidence.verify import Finding, load_public_key, verify


@pytest.fixture
def sealed(open_archive) -> Path:  # type: ignore[no-untyped-def]
    """Three segments of five records each (seq 1: ev00000..ev00004, seq 2, seq 3)."""
    archive = open_archive()
    archive.write([make_event(i, T0 + timedelta(minutes=12 * i)) for i in range(15)])
    archive.seal_all()
    archive.close()
    return archive.root


def lines_of(root: Path, seq: int) -> list[bytes]:
    return gzip.decompress((root / f"segments/{seq:08d}.jsonl.gz").read_bytes()).splitlines()


def rewrite(root: Path, seq: int, lines: list[bytes]) -> None:
    """What an attacker who can write the files does: edit, recompress, put back."""
    (root / f"segments/{seq:08d}.jsonl.gz").write_bytes(gzip.compress(b"".join(
        line + b"\n" for line in lines)))


def findings(root: Path) -> list[tuple[str, int, str | None]]:
    key = load_public_key((root / "public_key.pem").read_bytes())
    found: list[Finding] = verify(root, key).findings
    return [(f.kind, f.seq, f.record) for f in found]


def test_an_untouched_archive_verifies(sealed: Path) -> None:
    assert findings(sealed) == []


def test_a_changed_byte_names_the_modified_record(sealed: Path) -> None:
    lines = lines_of(sealed, 2)
    lines[1] = lines[1].replace(b"alice", b"alicf")
    rewrite(sealed, 2, lines)
    assert findings(sealed) == [("modified", 2, "ev00006")]


def test_a_changed_byte_in_the_compressed_file_is_found(sealed: Path) -> None:
    path = sealed / "segments/00000001.jsonl.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    kinds = {kind for kind, seq, _ in findings(sealed) if seq == 1}
    assert kinds & {"corrupt", "modified", "truncated"}


def test_a_deleted_record_is_named_missing(sealed: Path) -> None:
    lines = lines_of(sealed, 1)
    del lines[2]
    rewrite(sealed, 1, lines)
    assert findings(sealed) == [("missing", 1, "ev00002")]


def test_an_inserted_record_is_named(sealed: Path) -> None:
    lines = lines_of(sealed, 3)
    forged = json.loads(lines[0])
    forged["event"]["id"] = "forged"
    lines.insert(2, json.dumps(forged).encode())
    rewrite(sealed, 3, lines)
    assert findings(sealed) == [("inserted", 3, "forged")]


def test_two_swapped_records_are_both_named_reordered(sealed: Path) -> None:
    lines = lines_of(sealed, 1)
    lines[1], lines[3] = lines[3], lines[1]
    rewrite(sealed, 1, lines)
    assert sorted(findings(sealed)) == [("reordered", 1, "ev00001"), ("reordered", 1, "ev00003")]


def test_a_truncated_segment_names_where_it_ends_and_what_is_lost(sealed: Path) -> None:
    path = sealed / "segments/00000002.jsonl.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    (kind, seq, _), = findings(sealed)
    assert (kind, seq) == ("truncated", 2)
    detail = str(verify(sealed).findings[0])
    assert "ev00009" in detail and "of 5" in detail


def test_a_truncated_segment_of_whole_records_is_named(sealed: Path) -> None:
    rewrite(sealed, 2, lines_of(sealed, 2)[:3])          # cut at a record boundary, recompressed
    (found,) = verify(sealed).findings
    assert found.kind == "truncated" and "ev00008, ev00009" in found.detail


def test_a_removed_segment_is_named_with_its_records(sealed: Path) -> None:
    (sealed / "segments/00000003.jsonl.gz").unlink()
    (found,) = verify(sealed).findings
    assert (found.kind, found.seq) == ("segment_missing", 3)
    assert "ev00010..ev00014" in found.detail


def test_a_removed_manifest_breaks_the_chain(sealed: Path) -> None:
    (sealed / "manifests/00000002.json").unlink()
    assert {kind for kind, _, _ in findings(sealed)} == {"manifest_missing", "chain_broken"}


def test_a_chain_cut_at_its_end_is_found_through_the_head(sealed: Path) -> None:
    (sealed / "manifests/00000003.json").unlink()
    (sealed / "segments/00000003.jsonl.gz").unlink()
    assert findings(sealed) == [("manifest_missing", 3, None)]


def test_an_edited_manifest_fails_its_signature_and_the_chain(sealed: Path) -> None:
    path = sealed / "manifests/00000001.json"
    manifest = json.loads(path.read_bytes())
    manifest["records"] = 4
    path.write_text(json.dumps(manifest))
    kinds = {(kind, seq) for kind, seq, _ in findings(sealed)}
    assert {("bad_signature", 1), ("chain_broken", 2)} <= kinds


def test_signatures_from_another_key_are_refused(sealed: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key()
    kinds = {f.kind for f in verify(sealed, other).findings}
    assert kinds == {"bad_signature"}
