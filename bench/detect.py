"""bench/detect: audit events through the Sigma detector, with the full rule pack plus SigmaHQ's
Kubernetes audit rules, beside the same detector with no rules, in the same run.

Usage: .venv/bin/python bench/detect.py [--events N] [--repeats R] [--sigmahq DIR] [--cpu-time]

Input: bench/corpus.py's events (99% benign Metadata events rebuilt from a real Helm cluster's
audit log, 1% Falco attack traces), each distinct. SigmaHQ's rules: --sigmahq DIR, else
$CTRAIL_SHARED_DATA/sigmahq-kubernetes-audit/rules (default ../shared/data/real/...).

Two figures per configuration, best of R runs:
- observe: events/s through SigmaDetector.observe alone, on events parsed beforehand;
- parse+observe: events/s through the real audit parser and observe, the detect path's share of
  a pipeline.
Also the average number of rules evaluated in full per event (the rule index keeps it small
whatever the size of the pack) and the alerts raised.
The figure to quote is the last line: the time per event through parse+observe with the full
pack plus SigmaHQ, over the same with no rules, from the same run (1.0x = rules cost nothing;
aim: at most 1.5x).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("CTRAIL_SHARED_DATA", ROOT.parent / "shared" / "data" / "real"))
SIGMAHQ = SHARED / "sigmahq-kubernetes-audit" / "rules"
sys.path[:0] = [str(HERE), str(ROOT)]

from collector.parsers.k8s_audit import K8sAuditParser  # noqa: E402
from corpus import events as corpus_events  # noqa: E402
from ctrail.components import RawRecord  # noqa: E402
from detectors import PACKAGED_RULES, SigmaDetector, SigmaDetectorConfig  # noqa: E402

NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def raw_lines(count: int) -> list[bytes]:
    """`count` distinct realistic audit events (bench/corpus.py), one JSON document each."""
    return [orjson.dumps(doc) for doc in corpus_events(count, start=NOW)]


CLOCK: Callable[[], float] = time.perf_counter


def best_rate(run: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = CLOCK()
        count = run()
        best = max(best, count / (CLOCK() - start))
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sigmahq", type=Path, default=SIGMAHQ,
                        help="SigmaHQ's Kubernetes audit rules (a folder of .yml)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with this process's CPU time instead of the wall clock "
                        "(figures that hold on a machine other work keeps busy)")
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if not args.sigmahq.is_dir():
        sys.exit(f"{args.sigmahq}: no such folder (give --sigmahq DIR or CTRAIL_SHARED_DATA)")
    lines = raw_lines(args.events)
    with tempfile.TemporaryDirectory() as empty:
        bare = SigmaDetectorConfig(rule_paths=(Path(empty),)).build()
        full = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES, args.sigmahq),
                                   trusted_registries=("registry.corp.example",)).build()
        results = {"no rules": measure(bare, lines, args.repeats),
                   "pack + SigmaHQ": measure(full, lines, args.repeats)}
    print(f"input: {args.events} audit events (bench/corpus.py: 99% benign, 1% attacks), "
          f"best of {args.repeats}; SigmaHQ rules from {args.sigmahq}")
    for name, r in results.items():
        print(f"{name:15}: {r['rules']:3d} rules  observe {r['observe']:9.0f} ev/s  "
              f"parse+observe {r['parse+observe']:8.0f} ev/s  "
              f"rules evaluated/event {r['evaluated']:.2f}  alerts {r['alerts']}")
    bare_r, full_r = results["no rules"], results["pack + SigmaHQ"]
    # As times per event (the aim: the full pack costs at most 1.5x what no rules cost).
    print(f"time per event, observe alone, full pack plus SigmaHQ / no rules: "
          f"{bare_r['observe'] / full_r['observe']:.2f}x")
    print(f"time per event, full pack plus SigmaHQ / no rules: "
          f"{bare_r['parse+observe'] / full_r['parse+observe']:.2f}x")


if __name__ == "__main__":
    main()
