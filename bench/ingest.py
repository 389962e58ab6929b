"""bench/ingest: 200 000 audit events through the embedded pipeline, beside orjson alone.

Usage: .venv/bin/python bench/ingest.py [--events N]

Each measurement runs in a fresh subprocess (so peak RSS is its own). The figure to quote is the
ratio pipeline/orjson from the same run: these machines are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_only(path: Path) -> dict[str, float]:
    import orjson
    start = time.perf_counter()
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            orjson.loads(line)
            count += 1
    return {"events": count, "secs": time.perf_counter() - start}


def pipeline(path: Path) -> dict[str, float]:
    from ctrail.cli.main import main
    data_dir = Path(tempfile.mkdtemp(prefix="ctrail-bench-"))
    start = time.perf_counter()
    status = main(["ingest", "--source", "k8s-audit", "--data-dir", str(data_dir), str(path)])
    secs = time.perf_counter() - start
    assert status == 0
    from ctrail.settings import load_settings
    store = load_settings(None, data_dir).store.build(data_dir)
    stored = store.count("*", "events")
    store.close()
    return {"events": stored, "secs": secs}


def measure(mode: str, path: Path) -> dict[str, float]:
    """Run one mode in a subprocess; its result plus its peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path = args.child
        result = {"parse": parse_only, "pipeline": pipeline}[mode](Path(path))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    from corpus import write_audit_log
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        size = write_audit_log(path, args.events)
        base = measure("parse", path)
        full = measure("pipeline", path)
    rate_base = base["events"] / base["secs"]
    rate_full = full["events"] / full["secs"]
    print(f"input: {args.events} audit events, {size / 1e6:.1f} MB")
    print(f"orjson.loads alone : {rate_base:10.0f} events/s   peak RSS {base['peak_rss_mib']:.0f} MiB")
    print(f"embedded pipeline  : {rate_full:10.0f} events/s   peak RSS {full['peak_rss_mib']:.0f} MiB"
          f"   ({full['events']:.0f} stored)")
    print(f"ratio pipeline/orjson: {rate_full / rate_base:.3f}")


if __name__ == "__main__":
    main()
