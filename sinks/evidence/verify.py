"""Verify an evidence archive (a data directory's `evidence/`, or an unpacked export bundle).

Standalone on purpose: this file needs only the standard library and `cryptography` (for the
Ed25519 signatures), because the same source is shipped inside every export bundle for an
auditor to run without ContainerTrail (and the `openssl` command, for timestamp tokens):
  python3 verify.py DIR [--public-key PEM | --fingerprint SHA256-OF-THE-KEY]
                        [--tsa-ca PEM] [--tsa-cert PEM]

The format it checks (the archive writes it, sinks/evidence/archive.py):
  manifests/NNNNNNNN.json   one per sealed segment or tombstone, in chain order (seq 1, 2, ...);
                            canonical JSON; `prev` is the previous manifest's hash, `signature`
                            an Ed25519 signature of the manifest's hash (when signing is on)
  segments/NNNNNNNN.jsonl.gz  the records, one ECS document a line, gzip
  segments/NNNNNNNN.idx     "<event id> <sha256 of the line>" per record, in order
  head.json                 the last seq and its hash (signed): catches a chain cut at its end
  manifests/NNNNNNNN.tst    an RFC 3161 timestamp token over the manifest's hash (when a TSA
                            is configured): proof from a third party of when it was sealed
A manifest's hash is sha256 of its canonical JSON without the `signature` key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

GENESIS = "0" * 64


def canonical(doc: dict) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_hash(manifest: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in manifest.items()
                                     if k != "signature"})).hexdigest()


def record_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def record_id(line: bytes) -> str:
    try:
        return str(json.loads(line)["event"]["id"])
    except (ValueError, KeyError, TypeError):
        return "(unparseable record)"


def segment_name(seq: int) -> str:
    return f"segments/{seq:08d}.jsonl.gz"


def index_name(seq: int) -> str:
    return f"segments/{seq:08d}.idx"


def manifest_name(seq: int) -> str:
    return f"manifests/{seq:08d}.json"


def token_name(seq: int) -> str:
    """The RFC 3161 timestamp token (DER) over the manifest's hash (sinks/evidence/timestamp.py)."""
    return f"manifests/{seq:08d}.tst"


@dataclass(frozen=True)
class Finding:
    kind: str          # modified, missing, inserted, reordered, truncated, segment_missing, ...
    seq: int
    detail: str
    record: str | None = None

    def __str__(self) -> str:
        what = f" record {self.record}" if self.record else ""
        where = f": segment {self.seq}" if self.seq else ""   # 0: the archive, an open segment
        return f"{self.kind.upper()}{where}{what}: {self.detail}"


@dataclass
class Result:
    findings: list
    timestamps: int = 0            # tokens checked
    manifests: int = 0
    segments: int = 0
    records: int = 0
    tombstoned: int = 0
    bytes_hashed: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


def load_public_key(pem: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    return load_pem_public_key(pem)


def key_fingerprint(public_key) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: what an operator pins (and prints)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return hashlib.sha256(public_key.public_bytes(Encoding.DER,
                                                  PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def signature_ok(public_key, digest_hex: str, signature: str | None) -> bool:
    from cryptography.exceptions import InvalidSignature
    if signature is None:
        return False
    try:
        public_key.verify(base64.b64decode(signature), bytes.fromhex(digest_hex))
        return True
    except (InvalidSignature, ValueError):
        return False


@dataclass(frozen=True)
class TsaTrust:
    """Whom an RFC 3161 token must come from: a token chains to `ca_file` (the TSA's CA) and,
    when `tsa_cert` is given, is signed by exactly that certificate."""
    ca_file: Path | None
    tsa_cert: Path | None


TIME_STAMP = re.compile(r"^Time stamp: (\w{3} +\d+ \d\d:\d\d:\d\d)(?:\.\d+)? (\d{4}) GMT$", re.M)


def run_openssl(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def token_time(token: Path) -> datetime | None:
    """The token's genTime (when the TSA saw the hash), or None when it is not a token."""
    shown = run_openssl("ts", "-reply", "-in", token, "-token_in", "-text")
    found = TIME_STAMP.search(shown.stdout) if shown.returncode == 0 else None
    if found is None:
        return None
    return datetime.strptime(f"{found[1]} {found[2]}", "%b %d %H:%M:%S %Y").replace(
        tzinfo=timezone.utc)


def token_problem(token: Path, digest_hex: str, trust: TsaTrust) -> str | None:
    """None when the token's message imprint is `digest_hex` (SHA-256) and it is signed by the
    trusted TSA; else what is wrong. One `openssl ts -verify` per token, anchored at the pinned
    TSA certificate (`-partial_chain`: signed by exactly it; its issue by ca_file is checked once,
    tsa_chain_problem) or else at ca_file. A TSA certificate that has expired since is checked
    again at the token's own time: it still vouches for what it signed while valid."""
    anchor, extra = ((trust.tsa_cert, ["-partial_chain"]) if trust.tsa_cert is not None
                     else (trust.ca_file, []))
    assert anchor is not None
    base = ["ts", "-verify", "-digest", digest_hex, "-sha256", "-in", token, "-token_in",
            "-CAfile", anchor, *extra]
    checked = run_openssl(*base)
    if checked.returncode == 0:
        return None
    when = token_time(token)
    if when is None:
        return "not an RFC 3161 timestamp token"
    if "certificate has expired" in checked.stderr:
        checked = run_openssl(*base, "-attime", int(when.timestamp()))
        if checked.returncode == 0:
            return None
    if "imprint mismatch" in checked.stderr:
        return "the token's message imprint is not this manifest's hash"
    reason = next((line.split(":")[-1] for line in checked.stderr.splitlines()
                   if "error" in line), "verification failed")
    return f"not signed by the configured TSA ({anchor.name}): {reason.strip()}"


def tsa_chain_problem(trust: TsaTrust) -> str | None:
    """With both certificates: the pinned TSA certificate is one ca_file issued for timestamping
    (checked once, not per token; validity dates are each token's business)."""
    if trust.ca_file is None or trust.tsa_cert is None:
        return None
    checked = run_openssl("verify", "-CAfile", trust.ca_file, "-purpose", "timestampsign",
                          "-no_check_time", trust.tsa_cert)
    if checked.returncode == 0:
        return None
    return (f"the TSA certificate {trust.tsa_cert.name} is not a timestamping certificate of "
            f"{trust.ca_file.name}: {checked.stdout.strip()} {checked.stderr.strip()}")


def check_token(root: Path, m: dict, digest: str, trust: TsaTrust, result: Result) -> None:
    token = root / token_name(m["seq"])
    if not token.exists():
        result.findings.append(Finding("timestamp_missing", m["seq"], "no RFC 3161 timestamp "
                                       f"token ({token_name(m['seq'])})"))
        return
    problem = token_problem(token, digest, trust)
    if problem is not None:
        result.findings.append(Finding("bad_timestamp", m["seq"], problem))
    else:
        result.timestamps += 1


def read_lines(data: bytes) -> tuple[list, str]:
    """The whole records of a segment file, and "ok", "truncated" (the file ends early) or
    "corrupt" (the compressed stream is damaged: records after the damage are unreadable)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out, state = bytearray(), "ok"
    try:
        for start in range(0, len(data), 4096):     # piecewise: keep what precedes damage
            out += inflater.decompress(data[start:start + 4096])
        if not inflater.eof:
            state = "truncated"
    except zlib.error:
        state = "corrupt"
    lines = bytes(out).split(b"\n")
    if lines[-1] != b"":
        state = "truncated" if state == "ok" else state   # a torn last line is not a record
    lines.pop()
    return lines, state


def diff_records(seq: int, expected: list, lines: list, state: str) -> list:
    """Name what changed between the sealed index [(id, hash)] and the records found."""
    return diff_pairs(seq, expected, [(record_id(line), record_hash(line)) for line in lines],
                      state)


def diff_pairs(seq: int, expected: list, actual: list, state: str) -> list:
    """diff_records over the (id, hash) pairs of the records found."""
    exp_ids = {rid for rid, _ in expected}
    act_hash = {rid: h for rid, h in actual}
    findings = []
    for rid, h in expected:
        if rid in act_hash and act_hash[rid] != h:
            findings.append(Finding("modified", seq, "content differs from the sealed hash", rid))
    cut = len(actual)
    prefix = [rid for rid, _ in actual] == [rid for rid, _ in expected[:cut]]
    if state != "ok" or (prefix and cut < len(expected)):
        lost = [rid for rid, _ in expected[cut:]]
        kind = "corrupt" if state == "corrupt" else "truncated"
        findings.append(Finding(kind, seq, f"unreadable after record {cut} of {len(expected)}; "
                                f"{len(lost)} records lost: {', '.join(lost[:20])}"))
        missing_ids = [rid for rid, _ in expected[:cut] if rid not in act_hash]
    else:
        missing_ids = [rid for rid, _ in expected if rid not in act_hash]
    findings += [Finding("missing", seq, "sealed record is not in the segment", rid)
                 for rid in missing_ids]
    findings += [Finding("inserted", seq, "record was never sealed in this segment", rid)
                 for rid, _ in actual if rid not in exp_ids]
    common_exp = [rid for rid, _ in expected if rid in act_hash]
    common_act = [rid for rid, _ in actual if rid in exp_ids]
    findings += [Finding("reordered", seq, f"at position {i + 1}, sealed order has "
                         f"{common_exp[i]}", rid)
                 for i, rid in enumerate(common_act) if i < len(common_exp) and common_exp[i] != rid]
    return findings


def check_segment(root: Path, m: dict, result: Result) -> None:
    seq = m["seq"]
    path = root / segment_name(seq)
    if not path.exists():
        result.findings.append(Finding("segment_missing", seq, f"{m['records']} records "
                                       f"{m['first_id']}..{m['last_id']} are gone"))
        return
    data = path.read_bytes()
    result.bytes_hashed += len(data)
    result.segments += 1
    result.records += m["records"]
    for change in m.get("altered_before_seal", ()):
        result.findings.append(Finding(change["kind"], seq, f"{change['detail']} (changed in the "
                                       "open segment, before it was sealed)", change.get("record")))
    if hashlib.sha256(data).hexdigest() == m["sha256"]:
        return
    idx_path = root / index_name(seq)
    idx = idx_path.read_bytes() if idx_path.exists() else b""
    if hashlib.sha256(idx).hexdigest() != m["index_sha256"]:
        result.findings.append(Finding("index_modified", seq, "the record index does not "
                                       "match its manifest; records cannot be named"))
        return
    pairs = [tuple(line.split(b" ", 1)) for line in idx.splitlines()]
    expected = [(rid.decode(), h.decode()) for rid, h in pairs]
    lines, state = read_lines(data)
    found = diff_records(seq, expected, lines, state)
    result.findings += found or [Finding("modified", seq, "file bytes differ but every record "
                                         "matches (recompressed?)")]


def verify(root: Path, public_key=None, only_seqs: set | None = None,
           tsa: TsaTrust | None = None) -> Result:
    """Check the chain of manifests, their signatures, their timestamp tokens (with `tsa`), the
    head, and every segment (or only `only_seqs`, for a bundle holding part of the archive)."""
    result = Result(findings=[])
    chain_problem = tsa_chain_problem(tsa) if tsa is not None else None
    if chain_problem is not None:
        result.findings.append(Finding("bad_timestamp", 0, chain_problem))
    files = sorted((root / "manifests").glob("*.json"))
    prev, expected_seq, tombstoned = GENESIS, 1, set()
    segments = []
    for path in files:
        m = json.loads(path.read_bytes())
        seq = m.get("seq")
        result.manifests += 1
        if seq != expected_seq:
            result.findings.append(Finding("manifest_missing", expected_seq,
                                           f"chain jumps from {expected_seq - 1} to {seq}"))
        digest = manifest_hash(m)
        if m.get("prev") != prev:
            result.findings.append(Finding("chain_broken", seq, "prev does not match the hash "
                                           "of the manifest before it (edited or removed)"))
        if public_key is not None and not signature_ok(public_key, digest, m.get("signature")):
            result.findings.append(Finding("bad_signature", seq, "manifest signature invalid"))
        if tsa is not None:
            check_token(root, m, digest, tsa, result)
        if m["type"] == "tombstone":
            tombstoned |= {d["seq"] for d in m["deleted"]}
        else:
            segments.append(m)
        prev, expected_seq = digest, seq + 1
    check_head(root, prev, expected_seq - 1, public_key, result)
    for m in segments:
        if m["seq"] in tombstoned:
            result.tombstoned += 1
        elif only_seqs is None or m["seq"] in only_seqs:
            check_segment(root, m, result)
    return result


def check_head(root: Path, last_hash: str, last_seq: int, public_key, result: Result) -> None:
    path = root / "head.json"
    if not path.exists():
        if last_seq:
            result.findings.append(Finding("head_missing", last_seq, "head.json is missing"))
        return
    head = json.loads(path.read_bytes())
    if head["seq"] > last_seq:
        result.findings.append(Finding("manifest_missing", last_seq + 1, "the chain is cut: "
                                       f"head says it ends at {head['seq']}"))
    elif head["seq"] == last_seq and head["hash"] != last_hash:
        result.findings.append(Finding("chain_broken", last_seq, "last manifest differs from head"))
    digest = hashlib.sha256(canonical({"seq": head["seq"], "hash": head["hash"]})).hexdigest()
    if public_key is not None and not signature_ok(public_key, digest, head.get("signature")):
        result.findings.append(Finding("bad_signature", head["seq"], "head signature invalid"))


def main(argv: list) -> int:
    root = Path(argv[0]) if argv else Path(".")
    key_path = Path(argv[argv.index("--public-key") + 1]) if "--public-key" in argv else (
        root / "public_key.pem")
    key = load_public_key(key_path.read_bytes()) if key_path.exists() else None
    bundle = root / "EXPORT.json"
    only = set(json.loads(bundle.read_bytes())["segments"]) if bundle.exists() else None
    tsa = tsa_trust_of(root, argv)
    result = verify(root, key, only, tsa)
    if "--fingerprint" in argv:          # the key's owner gave its fingerprint out of band
        pinned = argv[argv.index("--fingerprint") + 1].lower()
        actual = key_fingerprint(key) if key is not None else "(no key)"
        if actual != pinned:
            result.findings.insert(0, Finding("key_untrusted", 0, f"the key {key_path} has "
                                              f"fingerprint {actual}, not {pinned}: re-signed?"))
    for finding in result.findings:
        print(finding)
    print(f"{result.manifests} manifests, {result.segments} segments, {result.records} records, "
          f"{result.tombstoned} expired (tombstoned), timestamps "
          f"{'checked' if tsa else 'NOT checked (no TSA certificate)'}, signatures "
          f"{'checked' if key else 'NOT checked (no public key)'}: "
          f"{'OK' if result.ok else f'{len(result.findings)} problems'}")
    return 0 if result.ok else 1


def tsa_trust_of(root: Path, argv: list) -> TsaTrust | None:
    """--tsa-ca / --tsa-cert, else the TSA certificates the bundle carries (tsa_ca.pem,
    tsa_cert.pem), else None: tokens are not checked."""
    def given(flag: str, bundled: str) -> Path | None:
        if flag in argv:
            return Path(argv[argv.index(flag) + 1])
        return root / bundled if (root / bundled).exists() else None
    ca_file, tsa_cert = given("--tsa-ca", "tsa_ca.pem"), given("--tsa-cert", "tsa_cert.pem")
    return TsaTrust(ca_file, tsa_cert) if ca_file or tsa_cert else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
