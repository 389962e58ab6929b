"""Copies of the sealed evidence in S3-compatible object storage under Object Lock
(`evidence.remote`), uploaded by `ctrail run` after each sealing pass.

What is uploaded, per manifest in chain order: the segment and its index, the timestamp token,
then the manifest itself (a manifest in the bucket means its files are there); then head.json and
public_key.pem, whose changes become new versions. Every object version is locked (lock_mode until
retain_days after its upload) and carries its SHA-256 as metadata and as S3's checksum. Legal
holds are mirrored: the objects of a segment that our `legal_holds` keep have their S3 legal hold
ON, and OFF again when the hold is lifted.

Uploads are tracked in <archive>/remote-state.json (key -> SHA-256 and version id), written
after each object, so a restart neither uploads twice nor forgets; an object over 64 MiB goes up
in parts and resumes after the last part the bucket holds (multipart.py). An object the state does not
know but the bucket holds with the same SHA-256 (a crash between upload and state write) is
recorded, not uploaded again: each object is written once. botocore retries each request with
exponential backoff; a failed pass is retried by a later one after a backoff of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Iterator, Sequence

from ctrail.durable import write_atomic
from ctrail.errors import Unavailable
from ctrail.secrets import resolve_secret
from sinks.evidence import multipart
from sinks.evidence.verify import canonical, index_name, manifest_name, segment_name, token_name
from sinks.notify.policy import Backoff

if TYPE_CHECKING:
    from sinks.evidence import EvidenceRemoteConfig, LegalHold

log = logging.getLogger(__name__)
STATE_FILE: Final = "remote-state.json"
# Rewritten locally (each seal, or a new key or TSA certificate): new remote versions.
MUTABLE: Final = ("head.json", "public_key.pem", "tsa_ca.pem", "tsa_cert.pem")
PASS_BACKOFF_SECS: Final = (30.0, 3600.0)    # a failed pass: first and longest wait (jittered)


def client(config: "EvidenceRemoteConfig") -> Any:
    import boto3
    from botocore.config import Config

    key_id = secret = None         # None: boto3's own chain (environment, instance role)
    if config.access_key_id is not None and config.secret_access_key is not None:
        key_id = resolve_secret(config.access_key_id).get_secret_value()
        secret = resolve_secret(config.secret_access_key).get_secret_value()
    options = Config(retries={"mode": "standard", "max_attempts": config.max_attempts},
                     connect_timeout=config.timeout_secs, read_timeout=config.timeout_secs,
                     # MinIO and Ceph are addressed by path unless their DNS is set up for it.
                     s3={"addressing_style": "path" if config.endpoint_url else "auto"})
    return boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region,
                        config=options, aws_access_key_id=key_id,
                        aws_secret_access_key=secret)


def unavailable(exc: Exception, what: str) -> Unavailable:
    """Every S3 failure is worth retrying later: the evidence stays local until it is copied."""
    return Unavailable(f"evidence remote: {what} failed: {exc}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifests(root: Path) -> tuple[list[dict[str, Any]], set[int]]:
    """The chain's manifests and the seqs of expired (tombstoned) segments."""
    manifests = [json.loads(p.read_bytes()) for p in sorted((root / "manifests").glob("*.json"))]
    gone = {d["seq"] for m in manifests if m["type"] == "tombstone" for d in m["deleted"]}
    return manifests, gone


def objects_of(root: Path, manifest: dict[str, Any], gone: set[int]) -> list[str]:
    """The archive files of one manifest, in upload order (the manifest last)."""
    seq = manifest["seq"]
    names = []
    if manifest["type"] == "segment" and seq not in gone:
        names += [segment_name(seq), index_name(seq)]
    if (root / token_name(seq)).exists():
        names.append(token_name(seq))
    return names + [manifest_name(seq)]


def holds_wanted(holds: Sequence["LegalHold"], root: Path, manifests: list[dict[str, Any]],
                 gone: set[int], known: dict[str, bool]) -> dict[str, bool]:
    """Seq -> whether a legal hold keeps that segment; `known` answers for seqs already
    decided under the same holds (a subject hold reads the whole segment)."""
    from sinks.evidence.retention import held_by

    return {str(m["seq"]): known[str(m["seq"])] if str(m["seq"]) in known
            else held_by(holds, root, m) is not None
            for m in manifests if m["type"] == "segment" and m["seq"] not in gone}


def holds_fingerprint(holds: Sequence["LegalHold"]) -> str:
    return hashlib.sha256(canonical({"holds": [h.model_dump(mode="json", by_alias=True)
                                               for h in holds]})).hexdigest()


@dataclass
class SyncResult:
    uploaded: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)     # found already in the bucket
    holds_changed: list[int] = field(default_factory=list)
    skipped: bool = False                                   # waiting out a failed pass


class RemoteArchive:
    """One archive's remote copy: upload what is not there yet, mirror legal holds."""

    def __init__(self, config: "EvidenceRemoteConfig", root: Path, s3: Any = None,
                 clock: Any = time.time) -> None:
        self.config = config
        self.root = root
        self.s3 = s3 if s3 is not None else client(config)
        self.clock = clock
        self.backoff = Backoff(*PASS_BACKOFF_SECS)
        path = root / STATE_FILE
        self.state: dict[str, Any] = (json.loads(path.read_bytes()) if path.exists() else
                                      {"objects": {}, "holds_fingerprint": ""})

    def key(self, name: str) -> str:
        return self.config.prefix + name

    def sync(self, holds: Sequence["LegalHold"]) -> SyncResult:
        """Upload every sealed file not yet in the bucket, then mirror the legal holds.
        Raises Unavailable (the rest is retried by a later pass, after a backoff)."""
        result = SyncResult()
        if self.clock() < self.state.get("retry_at", 0):
            result.skipped = True
            return result
        try:
            manifests, gone = load_manifests(self.root)
            wanted = self._holds(holds, manifests, gone)
            for manifest in manifests:
                hold = wanted.get(str(manifest["seq"]), False)
                for name in objects_of(self.root, manifest, gone):
                    self._ensure(name, hold, result)
            for name in MUTABLE:
                if (self.root / name).exists():
                    self._ensure(name, False, result)
            self._mirror_holds(manifests, gone, wanted, result)
        except Unavailable:
            failures = self.state.get("failures", 0) + 1
            self.state.update(failures=failures,
                              retry_at=self.clock() + self.backoff.delay(failures))
            self._save()
            raise
        if self.state.pop("failures", None) is not None:
            self.state.pop("retry_at", None)
            self._save()
        return result

    def known_holds(self, holds: Sequence["LegalHold"]) -> dict[str, bool]:
        """The holds decided in an earlier pass, if the legal holds have not changed since."""
        same = self.state["holds_fingerprint"] == holds_fingerprint(holds)
        return dict(self.state.get("wanted_holds", {})) if same else {}

    def _holds(self, holds: Sequence["LegalHold"], manifests: list[dict[str, Any]],
               gone: set[int]) -> dict[str, bool]:
        wanted = holds_wanted(holds, self.root, manifests, gone, self.known_holds(holds))
        self.state.update(wanted_holds=wanted, holds_fingerprint=holds_fingerprint(holds))
        return wanted

    def _ensure(self, name: str, hold: bool, result: SyncResult) -> None:
        known = self.state["objects"].get(name)
        if known is not None and name not in MUTABLE:
            return              # written once and uploaded: not hashed again on every pass
        path = self.root / name
        sha256 = file_sha256(path)
        if known is not None and known["sha256"] == sha256:
            return
        version = self._already_there(name, sha256)
        if version is not None:
            result.recorded.append(name)
        else:
            version = self._put(name, path, sha256, hold)
            result.uploaded.append(name)
        # A version found in the bucket keeps whatever hold it has: _mirror_holds sets it.
        self.state["objects"][name] = {"sha256": sha256, "version": version,
                                       "hold": hold if name in result.uploaded else None}
        self._save()

    def _already_there(self, name: str, sha256: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            head = self.s3.head_object(Bucket=self.config.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise unavailable(exc, f"HEAD {name}") from None
        except BotoCoreError as exc:
            raise unavailable(exc, f"HEAD {name}") from None
        same = head.get("Metadata", {}).get("sha256") == sha256
        return str(head.get("VersionId")) if same else None

    def _put(self, name: str, path: Path, sha256: str, hold: bool) -> str:
        from botocore.exceptions import BotoCoreError, ClientError
        until = datetime.now(timezone.utc) + timedelta(days=self.config.retain_days)
        if path.stat().st_size > multipart.MULTIPART_ABOVE:
            target = multipart.Target(self.config.bucket, self.key(name), sha256,
                                      self.config.lock_mode, until, hold)
            uploads = self.state.setdefault("uploads", {})
            try:
                return multipart.upload_in_parts(
                    self.s3, target, path, uploads.get(name),
                    lambda upload: self._save_upload(name, upload))
            except (BotoCoreError, ClientError) as exc:
                raise unavailable(exc, f"upload of {name} (in parts; it resumes)") from None
        try:
            with open(path, "rb") as body:
                reply = self.s3.put_object(
                    Bucket=self.config.bucket, Key=self.key(name), Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    Metadata={"sha256": sha256}, ObjectLockMode=self.config.lock_mode,
                    ObjectLockRetainUntilDate=until,
                    ObjectLockLegalHoldStatus="ON" if hold else "OFF")
        except (BotoCoreError, ClientError) as exc:
            raise unavailable(exc, f"upload of {name}") from None
        log.info("Uploaded evidence.", extra={"object": name, "bucket": self.config.bucket})
        return str(reply.get("VersionId"))

    def _mirror_holds(self, manifests: list[dict[str, Any]], gone: set[int],
                      wanted: dict[str, bool], result: SyncResult) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        for manifest in manifests:
            hold = wanted.get(str(manifest["seq"]))
            for name in objects_of(self.root, manifest, gone) if hold is not None else ():
                known = self.state["objects"][name]
                if known["hold"] == hold:
                    continue
                try:
                    self.s3.put_object_legal_hold(
                        Bucket=self.config.bucket, Key=self.key(name), VersionId=known["version"],
                        LegalHold={"Status": "ON" if hold else "OFF"})
                except (BotoCoreError, ClientError) as exc:
                    raise unavailable(exc, f"legal hold of {name}") from None
                known["hold"] = hold
                if manifest["seq"] not in result.holds_changed:
                    result.holds_changed.append(manifest["seq"])
                self._save()

    def _save_upload(self, name: str, upload: dict[str, Any] | None) -> None:
        if upload is None:
            self.state["uploads"].pop(name, None)
        else:
            self.state["uploads"][name] = upload
        self._save()

    def _save(self) -> None:
        write_atomic(self.root / STATE_FILE, json.dumps(self.state, sort_keys=True).encode())


def versions(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object version and delete marker under `prefix` (newest first per key)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Versions", []):
            yield {**entry, "DeleteMarker": False}
        for entry in page.get("DeleteMarkers", []):
            yield {**entry, "DeleteMarker": True}
