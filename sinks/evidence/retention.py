"""Expiry: the only way records leave the evidence archive.

A sealed segment expires `retention.<class>_days` after its bucket ends, unless a legal hold
covers it (by time range, by subject, or both). Expired segments are named in one tombstone
manifest appended to the chain, signed like any other, and only then deleted: a crash between
the two leaves files that a later run removes, never a gap the chain does not explain.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import orjson

from sinks.evidence import LegalHold
from sinks.evidence.archive import EvidenceArchive, iso
from sinks.evidence.verify import index_name, segment_name

DAY_SECS = 86400


@dataclass
class ExpiryResult:
    deleted: list[int] = field(default_factory=list)          # segment seqs
    held: dict[int, str] = field(default_factory=dict)        # seq -> the hold keeping it
    tombstone: dict[str, Any] | None = None


def expire(archive: EvidenceArchive, now: datetime | None = None) -> ExpiryResult:
    now = now or archive.clock()
    result = ExpiryResult()
    with archive._lock:
        manifests = archive.chain.manifests()
        tombstoned = {d["seq"] for m in manifests if m["type"] == "tombstone"
                      for d in m["deleted"]}
        due = []
        for m in manifests:
            if m["type"] != "segment" or m["seq"] in tombstoned:
                continue
            days = archive.config.retention.days(m["data_class"])
            if _bucket_end(m) + days * DAY_SECS > now.timestamp():
                continue
            hold = _held_by(archive, m)
            if hold is not None:
                result.held[m["seq"]] = hold.name
            else:
                due.append((m, days))
        if due:
            result.tombstone = archive.chain.append({
                "type": "tombstone", "reason": "expired", "at": iso(now.timestamp()),
                "deleted": [{"seq": m["seq"], "bucket": m["bucket"], "data_class": m["data_class"],
                             "records": m["records"], "first_id": m["first_id"],
                             "last_id": m["last_id"], "sha256": m["sha256"],
                             "retention_days": days} for m, days in due]})
            result.deleted = [m["seq"] for m, _ in due]
            if archive.timestamps is not None:      # a tombstone is dated like any manifest
                archive.timestamps.sealed(result.tombstone["seq"])
        for seq in {*tombstoned, *result.deleted}:
            for name in (segment_name(seq), index_name(seq)):
                (archive.root / name).unlink(missing_ok=True)
    return result


def _bucket_end(manifest: dict[str, Any]) -> float:
    return datetime.fromisoformat(manifest["bucket"]).timestamp() + manifest["bucket_secs"]


def _held_by(archive: EvidenceArchive, manifest: dict[str, Any]) -> LegalHold | None:
    return held_by(archive.config.legal_holds, archive.root, manifest)


def held_by(holds: Sequence[LegalHold], root: Path, manifest: dict[str, Any]) -> LegalHold | None:
    """The first legal hold that keeps this segment (also mirrored onto its remote copy)."""
    start = datetime.fromisoformat(manifest["bucket"]).timestamp()
    end = _bucket_end(manifest)
    for hold in holds:
        if hold.time_from is not None and end <= hold.time_from.timestamp():
            continue
        if hold.time_to is not None and start >= hold.time_to.timestamp():
            continue
        if hold.subject is None or _holds_subject(root, manifest, hold.subject):
            return hold
    return None


def _holds_subject(root: Path, manifest: dict[str, Any], subject: str) -> bool:
    path, value = subject.split(":", 1)
    data = gzip.decompress((root / segment_name(manifest["seq"])).read_bytes())
    return any(_matches(lookup(orjson.loads(line), path), value) for line in data.splitlines())


def lookup(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _matches(found: Any, value: str) -> bool:
    if isinstance(found, list):
        return value in map(str, found)
    return found is not None and str(found) == value
