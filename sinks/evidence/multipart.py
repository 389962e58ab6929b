"""A large evidence object goes up in parts, and an upload cut short resumes where it stopped.

The multipart upload's id is saved (in the remote state) before the first part is sent; a later
pass asks the bucket which parts it already holds (ListParts) and sends only the others, each
with its own SHA-256 checksum, which S3 checks on receipt. An upload the bucket no longer knows
(aborted by a lifecycle rule) starts again. The completed version gets its retention and legal
hold set explicitly as well: servers differ in whether they carry them over from the start of
the upload.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Final

PART_BYTES: Final = 16 * 1024 * 1024          # S3's smallest part is 5 MiB (except the last)
MULTIPART_ABOVE: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    bucket: str
    key: str
    sha256: str                  # of the whole file: kept as metadata, as for a single PUT
    lock_mode: str
    retain_until: datetime
    hold: bool


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _parts_there(s3: Any, target: Target, upload_id: str) -> dict[int, dict[str, Any]] | None:
    """The parts the bucket holds for this upload, by number; None when it has no such upload."""
    from botocore.exceptions import ClientError
    found: dict[int, dict[str, Any]] = {}
    try:
        for page in s3.get_paginator("list_parts").paginate(
                Bucket=target.bucket, Key=target.key, UploadId=upload_id):
            for part in page.get("Parts", []):
                found[part["PartNumber"]] = part
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
            return None
        raise
    return found


def _already_sent(part: dict[str, Any] | None, chunk: bytes) -> bool:
    if part is None:
        return False
    if part.get("ChecksumSHA256"):
        return bool(part["ChecksumSHA256"] == _b64(hashlib.sha256(chunk).digest()))
    return bool(part.get("ETag", "").strip('"') ==
                hashlib.md5(chunk, usedforsecurity=False).hexdigest())


def upload_in_parts(s3: Any, target: Target, path: Path, saved: dict[str, Any] | None,
                    save: Callable[[dict[str, Any] | None], None],
                    part_bytes: int = PART_BYTES) -> str:
    """Upload `path` as `target` (resuming `saved`, the upload a previous pass began); `save`
    keeps the upload's id (None once it is complete). Returns the new version's id. Raises
    botocore's errors: the caller decides they mean "later"."""
    upload = saved if saved is not None and saved.get("sha256") == target.sha256 else None
    there = _parts_there(s3, target, upload["upload_id"]) if upload is not None else None
    if upload is None or there is None:
        created = s3.create_multipart_upload(
            Bucket=target.bucket, Key=target.key, ChecksumAlgorithm="SHA256",
            Metadata={"sha256": target.sha256}, ObjectLockMode=target.lock_mode,
            ObjectLockRetainUntilDate=target.retain_until,
            ObjectLockLegalHoldStatus="ON" if target.hold else "OFF")
        upload, there = {"upload_id": created["UploadId"], "sha256": target.sha256}, {}
        save(upload)
    parts = []
    with open(path, "rb") as data:
        for number, chunk in enumerate(iter(lambda: data.read(part_bytes), b""), start=1):
            sent = there.get(number)
            if sent is None or not _already_sent(sent, chunk):
                sent = s3.upload_part(
                    Bucket=target.bucket, Key=target.key, UploadId=upload["upload_id"],
                    PartNumber=number, Body=chunk, ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_b64(hashlib.sha256(chunk).digest()))
            parts.append({"PartNumber": number, "ETag": sent["ETag"],
                          "ChecksumSHA256": sent.get("ChecksumSHA256")
                          or _b64(hashlib.sha256(chunk).digest())})
    done = s3.complete_multipart_upload(Bucket=target.bucket, Key=target.key,
                                        UploadId=upload["upload_id"],
                                        MultipartUpload={"Parts": parts})
    version = str(done["VersionId"])
    s3.put_object_retention(Bucket=target.bucket, Key=target.key, VersionId=version,
                            Retention={"Mode": target.lock_mode,
                                       "RetainUntilDate": target.retain_until})
    s3.put_object_legal_hold(Bucket=target.bucket, Key=target.key, VersionId=version,
                             LegalHold={"Status": "ON" if target.hold else "OFF"})
    save(None)
    return version
