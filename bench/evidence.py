"""Evidence archive throughput: archiving (events/s, signed, fsync per batch as the stage does)
and verification (MB/s of sealed segment bytes), beside `sha256sum` over the same bytes in the
same run, so the numbers say how far verification is from plain hashing on this machine.

    .venv/bin/python bench/evidence.py [--events 200000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat  # noqa: E402

from ctrail.event import Event  # noqa: E402
from sinks.evidence import EvidenceConfig  # noqa: E402
from sinks.evidence.archive import EvidenceArchive  # noqa: E402
from sinks.evidence.verify import load_public_key, verify  # noqa: E402

# Live traffic: events of the current hours, sealed once at the end (seal_all), as `ctrail run`
# seals each hour after it ends. (Historic ingest seals per batch: see --historic.)
START = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def events(n: int) -> list[Event]:
    """Realistic records: the bundled real audit events (bench/corpus.py), each with a fresh
    auditID, as event.original (so segments compress as real ones do, not as n copies)."""
    import uuid

    import orjson

    from corpus import templates

    shapes = templates()
    out = []
    for i in range(n):
        original = orjson.dumps({**shapes[i % len(shapes)], "auditID": str(uuid.uuid4())}).decode()
        out.append(Event.model_validate({
            "@timestamp": START + timedelta(milliseconds=18 * i),
            "user": {"name": f"user{i % 50}"},
            "event": {"id": f"{i:032x}", "action": "create", "dataset": "kubernetes.audit",
                      "module": "kubernetes", "original": original, "ingested": START}}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--historic", action="store_true",
                        help="events from a year ago: every batch seals (and chains) a segment")
    args = parser.parse_args()
    global START
    if args.historic:
        START -= timedelta(days=365)
    corpus = events(args.events)
    with tempfile.TemporaryDirectory(prefix="ctrail-bench-") as tmp:
        key = Path(tmp) / "key.pem"
        key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        config = EvidenceConfig.model_validate({"signing_key": {"file": str(key)}})
        archive = EvidenceArchive(config, Path(tmp) / "evidence")
        began = time.perf_counter()
        for start in range(0, len(corpus), args.batch):
            archive.write(corpus[start:start + args.batch])
        archive.seal_all()
        archived = time.perf_counter() - began
        archive.close()
        root = Path(tmp) / "evidence"
        segments = sorted((root / "segments").glob("*.jsonl.gz"))
        size = sum(p.stat().st_size for p in segments)
        public = load_public_key((root / "public_key.pem").read_bytes())
        began = time.perf_counter()
        result = verify(root, public)
        verified = time.perf_counter() - began
        assert result.ok and result.records == len(corpus), result.findings[:3]
        sha256sum = shutil.which("sha256sum")
        began = time.perf_counter()
        if sha256sum:
            subprocess.run([sha256sum, *map(str, segments)], check=True, capture_output=True)
        hashed = time.perf_counter() - began
    mb = size / 1e6
    print(f"archive: {len(corpus)} events in {archived:.2f} s = {len(corpus) / archived:,.0f} "
          f"events/s ({len(segments)} segments, {mb:.1f} MB compressed, batch {args.batch})")
    print(f"verify:  {mb:.1f} MB in {verified:.3f} s = {mb / verified:,.0f} MB/s "
          f"({result.manifests} manifests, signatures checked)")
    if sha256sum:
        print(f"sha256sum of the same segment files: {hashed:.3f} s = {mb / hashed:,.0f} MB/s")


if __name__ == "__main__":
    main()
