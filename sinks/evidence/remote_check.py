"""Reading the remote copy back: `ctrail evidence verify --remote` and `ctrail evidence restore`.

An object of the chain (segment, index, token, manifest) is written once: in the bucket it must
have exactly one version, whose bytes hash to the local file's SHA-256, locked in the configured
mode until a date still ahead, with the legal hold our holds ask for. head.json and
public_key.pem change, so only their newest version is compared. Contents are downloaded and
hashed here, not taken from the server's stored checksum, which a writer can set.

Restore takes, for each object written once, its oldest version (the one we uploaded; a later
one was put over it), and the newest of head.json and public_key.pem; it writes only files that
are missing locally, then the caller verifies the result like any archive.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, Final, Sequence

from ctrail.durable import fsync_dir
from sinks.evidence.remote import (
    MUTABLE,
    RemoteArchive,
    file_sha256,
    holds_wanted,
    load_manifests,
    objects_of,
    unavailable,
    versions,
)
from sinks.evidence.verify import Finding

if TYPE_CHECKING:
    from sinks.evidence import LegalHold

ARCHIVE_NAME: Final = re.compile(r"^(manifests/\d{8}\.(json|tst)|segments/\d{8}\.(jsonl\.gz|idx)"
                                 r"|head\.json|public_key\.pem|tsa_ca\.pem|tsa_cert\.pem)$")


def _seq_of(name: str) -> int:
    return int(name.split("/")[1][:8]) if "/" in name else 0


def _download(remote: RemoteArchive, name: str, version: str, into: IO[bytes]) -> str:
    """Stream one object version into `into` (a segment may be large); its SHA-256."""
    from botocore.exceptions import BotoCoreError, ClientError
    digest = hashlib.sha256()
    try:
        reply = remote.s3.get_object(Bucket=remote.config.bucket, Key=remote.key(name),
                                     VersionId=version)
        for chunk in reply["Body"].iter_chunks(1 << 20):
            digest.update(chunk)
            into.write(chunk)
    except (BotoCoreError, ClientError) as exc:
        raise unavailable(exc, f"download of {name}") from None
    return digest.hexdigest()


def _restore_file(remote: RemoteArchive, name: str, version: str) -> None:
    """Written to a temporary name, fsynced and renamed, as the archive writes its files."""
    path = remote.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        _download(remote, name, version, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _versions_by_name(remote: RemoteArchive) -> dict[str, list[dict[str, Any]]]:
    from botocore.exceptions import BotoCoreError, ClientError
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        for entry in versions(remote.s3, remote.config.bucket, remote.config.prefix):
            found[entry["Key"][len(remote.config.prefix):]].append(entry)
    except (BotoCoreError, ClientError) as exc:
        raise unavailable(exc, "listing the bucket") from None
    return found            # per name: versions newest first (S3's order), then delete markers


def verify_remote(remote: RemoteArchive, holds: Sequence["LegalHold"],
                  now: datetime | None = None) -> list[Finding]:
    """Name every object of the local archive whose remote copy is missing, changed, unlocked
    or not held as our legal holds say."""
    now = now or datetime.now(timezone.utc)
    manifests, gone = load_manifests(remote.root)
    wanted = holds_wanted(holds, remote.root, manifests, gone, remote.known_holds(holds))
    found = _versions_by_name(remote)
    findings: list[Finding] = []
    for manifest in manifests:
        hold = wanted.get(str(manifest["seq"]))
        for name in objects_of(remote.root, manifest, gone):
            findings += _check(remote, name, found.get(name, []), hold, now)
    for name in MUTABLE:
        if (remote.root / name).exists():
            findings += _check(remote, name, found.get(name, []), None, now)
    return findings


def _check(remote: RemoteArchive, name: str, entries: list[dict[str, Any]], hold: bool | None,
           now: datetime) -> list[Finding]:
    seq, where = _seq_of(name), f"{remote.key(name)} in bucket {remote.config.bucket}"
    live = [e for e in entries if not e["DeleteMarker"]]
    if not live:
        return [Finding("remote_missing", seq, f"{where} is not there")]
    findings = []
    if any(e["DeleteMarker"] and e.get("IsLatest") for e in entries):
        findings.append(Finding("remote_deleted", seq, f"{where}: a delete marker hides it "
                                "(the locked version is still there)"))
    if name not in MUTABLE and len(entries) > 1:
        findings.append(Finding("remote_modified", seq, f"{where} has {len(entries)} versions; "
                                "it was written once"))
    newest = live[0]
    with open(os.devnull, "wb") as sink:
        remote_sha256 = _download(remote, name, newest["VersionId"], sink)
    if remote_sha256 != file_sha256(remote.root / name):
        findings.append(Finding("remote_modified", seq, f"{where}: its SHA-256 differs from the "
                                "archive's"))
    if name in MUTABLE:
        return findings
    head = remote.s3.head_object(Bucket=remote.config.bucket, Key=remote.key(name),
                                 VersionId=newest["VersionId"])
    until = head.get("ObjectLockRetainUntilDate")
    if head.get("ObjectLockMode") != remote.config.lock_mode or until is None or until <= now:
        findings.append(Finding("remote_unlocked", seq, f"{where}: lock "
                                f"{head.get('ObjectLockMode')} until {until}, not "
                                f"{remote.config.lock_mode} in force"))
    held = head.get("ObjectLockLegalHoldStatus") == "ON"
    if hold is not None and held != hold:
        findings.append(Finding("remote_hold", seq, f"{where}: legal hold "
                                f"{'ON' if held else 'OFF'}, our legal holds say "
                                f"{'ON' if hold else 'OFF'}"))
    return findings


def restore(remote: RemoteArchive) -> tuple[list[str], list[str]]:
    """Download every archive file missing locally; returns (restored, kept) names."""
    restored, kept = [], []
    remote.root.mkdir(parents=True, exist_ok=True)
    for name, entries in sorted(_versions_by_name(remote).items()):
        live = [e for e in entries if not e["DeleteMarker"]]
        if not ARCHIVE_NAME.match(name) or not live:
            continue
        if (remote.root / name).exists():
            kept.append(name)
            continue
        chosen = live[0] if name in MUTABLE else live[-1]
        _restore_file(remote, name, chosen["VersionId"])
        remote.state["objects"][name] = {"sha256": file_sha256(remote.root / name),
                                         "version": chosen["VersionId"], "hold": None}
        restored.append(name)
    remote._save()
    return restored, kept

