"""bench/collect: parse-and-normalise events/s per source, and audit-webhook requests/s with
batches of 100, each beside `orjson.loads` of the same bytes in the same run (the ratio is the
figure to quote; these machines are noisy).

Usage: .venv/bin/python bench/collect.py [--records 20000] [--requests 200]
Samples: the real ones in ../shared/data/real (CTRAIL_SHARED_DATA to point elsewhere).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CTRAIL_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))

from collector import PARSERS  # noqa: E402
from ctrail.components import RawRecord  # noqa: E402
from ctrail.errors import InvalidInput  # noqa: E402

SOURCES: dict[str, list[str]] = {
    "k8s-audit": ["falco-k8saudit-traces/trace_files/*.json"],
    "docker-events": ["docker-events/*.jsonl"],
    "container-log": ["fluentbit-k8s-container-logs/cri_multiline_input.log"],
    "falco": ["falco-alerts-json/*.jsonl"],
    "registry": ["distribution-notifications/docs_push_envelope_3events.json"],
    "harbor": ["harbor-webhooks/*.json"],
}


def records_of(source: str, count: int) -> list[bytes]:
    """The source's real records that parse, repeated to `count`."""
    parser = PARSERS[source]()
    now = datetime.now(timezone.utc)
    good: list[bytes] = []
    for pattern in SOURCES[source]:
        for path in sorted(SHARED.glob(pattern)):
            data = path.read_bytes()
            chunks = [data] if data.lstrip().startswith(b"{\n") else data.splitlines()
            for chunk in chunks:
                try:
                    if chunk.strip() and parser.parse(RawRecord(chunk, f"{path}:1", now)):
                        good.append(chunk)
                except InvalidInput:
                    pass
    return [good[i % len(good)] for i in range(count)] if good else []


def rate(fn: Callable[[bytes], object], records: list[bytes]) -> float:
    start = time.perf_counter()
    for record in records:
        fn(record)
    return len(records) / (time.perf_counter() - start)


def parsers(count: int) -> None:
    now = datetime.now(timezone.utc)
    print(f"{'source':14} {'parse events/s':>15} {'orjson rec/s':>13} {'ratio':>7}")
    for source in SOURCES:
        records = records_of(source, count)
        if not records:
            print(f"{source:14} (no samples found under {SHARED})")
            continue
        parser = PARSERS[source]()
        origin = ("/var/log/containers/web-1_shop_app-"
                  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log:1")
        events = sum(len(parser.parse(RawRecord(r, origin, now))) for r in records[:100]) / 100
        # Called at once, in this iteration: the loop variables are the ones meant.
        parsed = rate(lambda r: parser.parse(RawRecord(r, origin, now)), records) * events  # noqa: B023
        json_records = all(r.lstrip()[:1] == b"{" for r in records)
        # CRI lines are not JSON: their baseline is the split into time, stream, tag, message.
        base = rate(orjson.loads if json_records else (lambda r: r.split(b" ", 3)), records)
        note = "" if json_records else "  (baseline: split of the CRI line)"
        print(f"{source:14} {parsed:15.0f} {base:13.0f} {parsed / base:7.3f}{note}")


def webhook(requests: int) -> None:
    """POSTs of 100-event EventLists to the audit webhook with the embedded pipeline behind."""
    import subprocess
    lines = records_of("k8s-audit", 100)
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(
        line.strip() for line in lines) + b"]}"
    base = rate(orjson.loads, [body] * requests)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ctrail.yaml"
        config.write_text("sources: {hook: {type: k8s_audit_webhook, port: 18480, "
                          "token: {env: BENCH_TOKEN}}}\n")
        env = {**os.environ, "BENCH_TOKEN": "bench-token"}
        run = subprocess.Popen([str(Path(sys.executable).with_name("ctrail")), "run", "--config",
                                str(config), "--data-dir", str(Path(tmp) / "data")],
                               env=env, stderr=subprocess.DEVNULL)
        time.sleep(4)
        conn = http.client.HTTPConnection("127.0.0.1", 18480, timeout=60)
        start = time.perf_counter()
        for _ in range(requests):
            conn.request("POST", "/", body=body, headers={"Authorization": "Bearer bench-token"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        secs = time.perf_counter() - start
        run.terminate()
        run.wait(timeout=60)
    print(f"audit webhook, batches of 100: {requests / secs:8.1f} requests/s "
          f"({requests * 100 / secs:.0f} events/s); orjson.loads of the same bodies: "
          f"{base:.0f} requests/s; ratio {requests / secs / base:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    parsers(args.records)
    webhook(args.requests)


if __name__ == "__main__":
    main()
