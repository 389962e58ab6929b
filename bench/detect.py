"""bench/detect: audit events through the Sigma detector, with the full rule pack plus SigmaHQ's
Kubernetes audit rules, beside the same detector with no rules, in the same run.

Usage: .venv/bin/python bench/detect.py [--events N] [--repeats R]

Two figures per configuration, best of R runs:
- observe: events/s through SigmaDetector.observe alone, on events parsed beforehand;
- parse+observe: events/s through the real audit parser and observe, the detect path's share of
  a pipeline. The ratio to quote is no-rules/with-rules of this one (aim: under 2x).
Also the average number of rules evaluated in full per event: the rule index keeps it small
whatever the size of the pack.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIGMAHQ = ROOT.parent / "shared" / "data" / "real" / "sigmahq-kubernetes-audit" / "rules"
sys.path[:0] = [str(HERE), str(ROOT)]

from collector.parsers.k8s_audit import K8sAuditParser  # noqa: E402
from corpus import templates  # noqa: E402
from ctrail.components import RawRecord  # noqa: E402
from detectors import PACKAGED_RULES, SigmaDetector, SigmaDetectorConfig  # noqa: E402

NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def raw_lines(count: int) -> list[bytes]:
    """`count` distinct real-shaped audit events (fresh auditID and time for each)."""
    shapes = templates()
    lines = []
    for i in range(count):
        doc = dict(shapes[i % len(shapes)])
        at = (NOW + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
        doc["auditID"] = str(uuid.UUID(int=i))
        doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = at
        lines.append(orjson.dumps(doc))
    return lines


def best_rate(run: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def measure(detector: SigmaDetector, lines: list[bytes], repeats: int) -> dict[str, Any]:
    parser = K8sAuditParser()
    events = [e for line in lines for e in parser.parse(RawRecord(line, "bench", NOW))]

    def observe_only() -> int:
        for event in events:
            detector.observe(event)
        return len(events)

    def parse_and_observe() -> int:
        for line in lines:
            for event in parser.parse(RawRecord(line, "bench", NOW)):
                detector.observe(event)
        return len(lines)

    detector.evaluated = 0
    alerts = sum(len(detector.observe(event)) for event in events)
    evaluated = detector.evaluated / len(events)
    return {"rules": len(detector.rules.rules), "alerts": alerts, "evaluated": evaluated,
            "observe": best_rate(observe_only, repeats),
            "parse+observe": best_rate(parse_and_observe, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lines = raw_lines(args.events)
    with tempfile.TemporaryDirectory() as empty:
        bare = SigmaDetectorConfig(rule_paths=(Path(empty),)).build()
        full = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES, SIGMAHQ),
                                   trusted_registries=("registry.corp.example",)).build()
        results = {"no rules": measure(bare, lines, args.repeats),
                   "pack + SigmaHQ": measure(full, lines, args.repeats)}
    print(f"input: {args.events} audit events ({len(templates())} real shapes), "
          f"best of {args.repeats}")
    for name, r in results.items():
        print(f"{name:15}: {r['rules']:3d} rules  observe {r['observe']:9.0f} ev/s  "
              f"parse+observe {r['parse+observe']:8.0f} ev/s  "
              f"rules evaluated/event {r['evaluated']:.2f}  alerts {r['alerts']}")
    bare_r, full_r = results["no rules"], results["pack + SigmaHQ"]
    print(f"ratio no-rules/with-rules, parse+observe: "
          f"{bare_r['parse+observe'] / full_r['parse+observe']:.2f}x   "
          f"(observe alone: {bare_r['observe'] / full_r['observe']:.1f}x)")


if __name__ == "__main__":
    main()
