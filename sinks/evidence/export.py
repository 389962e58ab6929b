"""`ctrail evidence export`: a self-contained tar bundle an auditor can verify on their own.

The bundle holds the sealed segments whose hour overlaps the requested range, their indexes,
the whole chain of manifests (small, and needed to show nothing was cut out around them), the
head, the public key, EXPORT.json (what was asked for and what is inside), verify.py (this
package's standalone verifier) and VERIFY.md. Open segments (the last seal_after_secs) are not
yet sealed and so not exported.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ctrail.errors import UsageError
from sinks.evidence.verify import (
    index_name,
    key_fingerprint,
    load_public_key,
    segment_name,
    token_name,
)

VERIFY_MD = """# Verifying this evidence bundle

Exported by ContainerTrail on {created} for {time_from} .. {time_to}:
{segments} sealed segments, {records} records.

Requirements: Python 3.10+ and the `cryptography` package (`pip install cryptography`); the
`openssl` command (1.1 or later) when the bundle holds timestamp tokens (manifests/*.tst).

    mkdir bundle && tar -xf {name} -C bundle
    python3 bundle/verify.py bundle --public-key KEY.pem
    python3 bundle/verify.py bundle --fingerprint SHA256   (or: pin the bundled key's)

Use a public key, or its fingerprint, obtained from the archive's owner out of band;
`public_key.pem` in the bundle only proves the bundle is self-consistent (its fingerprint, the
SHA-256 of its DER form, is {fingerprint}).
Without any key the hashes and the chain are still checked, the signatures are not.

Timestamp tokens are checked against the TSA certificates given with `--tsa-ca CA.pem` and/or
`--tsa-cert TSA.pem` (obtain them from the TSA), else against the copies in the bundle
(tsa_ca.pem, tsa_cert.pem), which again only show self-consistency.

What is checked:
- every manifest (manifests/NNNNNNNN.json) links to the one before it: `prev` equals the SHA-256
  of the previous manifest's canonical JSON (sorted keys, no spaces) without `signature`;
- every manifest and head.json carry a valid Ed25519 signature of that hash;
- head.json names the last manifest, so a chain cut at its end is found;
- each exported segment's SHA-256 equals its manifest's `sha256`; when not, each record is
  compared with segments/NNNNNNNN.idx (itself hashed in the manifest) and every modified,
  missing, inserted, reordered or truncated record is named by its event id;
- segments named in a tombstone manifest were deleted by retention expiry, not lost;
- each manifest has an RFC 3161 timestamp token (manifests/NNNNNNNN.tst) whose message imprint
  is the manifest's hash and which the trusted TSA signed (`openssl ts -verify`): a third
  party's word that the manifest existed at the token's time.

The verifier prints one line per problem and exits 1, or a summary ending in OK and exits 0.
"""


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    segments: int
    records: int


def select(root: Path, time_from: datetime, time_to: datetime) -> list[dict[str, Any]]:
    manifests = [json.loads(p.read_bytes()) for p in sorted((root / "manifests").glob("*.json"))]
    gone = {d["seq"] for m in manifests if m["type"] == "tombstone" for d in m["deleted"]}
    chosen = []
    for m in manifests:
        if m["type"] != "segment" or m["seq"] in gone:
            continue
        start = datetime.fromisoformat(m["bucket"]).timestamp()
        if start < time_to.timestamp() and start + m["bucket_secs"] > time_from.timestamp():
            chosen.append(m)
    return chosen


def export(root: Path, time_from: datetime, time_to: datetime, out: Path) -> ExportSummary:
    if not (root / "manifests").is_dir():
        raise UsageError(f"no evidence archive at {root}")
    chosen = select(root, time_from, time_to)
    created = datetime.now().astimezone().isoformat(timespec="seconds")
    key = root / "public_key.pem"
    info = {"from": time_from.isoformat(), "to": time_to.isoformat(), "created": created,
            "segments": [m["seq"] for m in chosen], "records": sum(m["records"] for m in chosen)}
    fingerprint = (key_fingerprint(load_public_key(key.read_bytes())) if key.exists()
                   else "(unsigned)")
    readme = VERIFY_MD.format(created=created, time_from=info["from"], time_to=info["to"],
                              segments=len(chosen), records=info["records"], name=out.name,
                              fingerprint=fingerprint)
    verifier = resources.files("sinks.evidence").joinpath("verify.py").read_bytes()
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w") as tar:
        _add_bytes(tar, "VERIFY.md", readme.encode())
        _add_bytes(tar, "verify.py", verifier)
        _add_bytes(tar, "EXPORT.json", json.dumps(info, indent=2).encode())
        for name in ("head.json", "public_key.pem", "tsa_ca.pem", "tsa_cert.pem"):
            if (root / name).exists():
                tar.add(root / name, arcname=name)
        for path in sorted((root / "manifests").glob("*.json")):
            tar.add(path, arcname=f"manifests/{path.name}")
            token = root / token_name(int(path.stem))
            if token.exists():
                tar.add(token, arcname=token_name(int(path.stem)))
        for m in chosen:
            for name in (segment_name(m["seq"]), index_name(m["seq"])):
                tar.add(root / name, arcname=name)
    tmp.replace(out)
    return ExportSummary(out, len(chosen), info["records"])


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = int(time.time())
    member.mode = 0o644
    tar.addfile(member, io.BytesIO(data))


def unpack(bundle: Path, into: Path) -> Path:
    """Extract a bundle for verification (the `data` filter refuses links and absolute paths)."""
    with tarfile.open(bundle) as tar:
        tar.extractall(into, filter="data")
    return into
