"""A large, realistic audit log made from the bundled real samples (samples/k8s-audit).

Each generated line is a real audit event with a fresh auditID and timestamp, so every line is
a distinct event (distinct id) while the shapes stay what kube-apiserver writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "k8s-audit"
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def templates() -> list[dict]:  # type: ignore[type-arg]
    events = []
    for path in sorted(SAMPLES.glob("*.json")):
        for line in path.read_bytes().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("kind") == "Event":
                events.append(doc)
    return events


def write_audit_log(path: Path, count: int) -> int:
    """Write `count` audit events, one a line; returns the bytes written."""
    shapes = templates()
    with open(path, "wb") as out:
        for i in range(count):
            doc = dict(shapes[i % len(shapes)])
            at = (START + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
            doc["auditID"] = str(uuid.UUID(int=i))
            doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = at
            out.write(orjson.dumps(doc) + b"\n")
    return path.stat().st_size
