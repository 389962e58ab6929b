"""bench/ingest: audit events through `ctrail ingest` (the embedded pipeline), beside orjson alone.

Usage: .venv/bin/python bench/ingest.py [--events 200000]

Input: bench/corpus.py's audit log (99% benign Metadata events rebuilt from a real Helm
cluster's audit log, 1% Falco attack traces; ~0.85 KB a line). Each measurement runs in a fresh
subprocess, so its peak RSS and CPU time are its own:
- orjson: `orjson.loads` of every line of the file, the floor of any JSON pipeline;
- pipeline: `ctrail ingest --source k8s-audit FILE --data-dir TMP` through ctrail.cli.main.main
  (parse, enrich, detect, store, notify), into a fresh data directory.

Figures, for the measured call only (not interpreter start-up or imports):
- events/s: events (for the pipeline: audit events found in the store afterwards) / wall seconds;
- events per CPU-second: events / (user + sys CPU seconds of the child process, its threads
  and any process it waited for; resource.getrusage SELF + CHILDREN deltas). On a shared
  machine this is steadier than events/s, and it shows what parallelism bought;
- peak RSS of the child (VmHWM; the largest of it and its children).
The figure to quote is the ratio pipeline/orjson of events/s from the same run: these machines
are noisy, ratios less so. The temporary directory (log and data directory) is removed.
Disk: after the ingest, the store file (with its WAL, if any) and the local log (the data
directory's bus/: what the log keeps once every group has committed, see ctrail/bus/local.py)
beside the raw input file.
Last lines:
    pipeline: N events/s, C events per CPU-second
    ratio pipeline/orjson: X
    disk: store plus local log vs raw: D (store S MB, local log L MB, raw R MB)
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
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


def cpu_seconds() -> float:
    """User + sys CPU of this process (all its threads) and of the children it waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed(run: Callable[[], int]) -> dict[str, float]:
    cpu, start = cpu_seconds(), time.perf_counter()
    events = run()
    return {"events": events, "secs": time.perf_counter() - start, "cpu": cpu_seconds() - cpu}


def parse_only(path: Path, data_dir: Path) -> dict[str, float]:
    import orjson

    def run() -> int:
        count = 0
        with open(path, "rb") as handle:
            for line in handle:
                orjson.loads(line)
                count += 1
        return count
    return timed(run)


def pipeline(path: Path, data_dir: Path) -> dict[str, float]:
    from ctrail.cli.main import main
    from ctrail.ecs import DATASET_K8S_AUDIT, EVENT_DATASET
    from ctrail.settings import load_settings

    def run() -> int:
        try:
            status = main(["ingest", "--source", "k8s-audit", "--data-dir", str(data_dir),
                           str(path)])
        except SystemExit as exc:                 # a CLI may exit rather than return
            status = exc.code if isinstance(exc.code, int) else 1
        if status != 0:
            raise SystemExit(f"ctrail ingest exited with status {status}")
        return 0
    result = timed(run)
    store = load_settings(None, data_dir).store.build(data_dir)
    try:
        result["events"] = store.count(f'{EVENT_DATASET}:"{DATASET_K8S_AUDIT}"', "events")
        result["dead_letters"] = store.count("*", "dead_letters")
    finally:
        store.close()
    result["store_bytes"] = sum(p.stat().st_size for p in data_dir.glob("store.sqlite3*"))
    result["log_bytes"] = sum(p.stat().st_size for p in (data_dir / "bus").rglob("*")
                              if p.is_file())
    return result


def measure(mode: str, path: Path, data_dir: Path) -> dict[str, Any]:
    """Run one mode in a subprocess; its result, CPU time and peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(data_dir)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM: ru_maxrss of a process started by vfork+exec, as
    subprocess does, starts at its parent's), or its children's if larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])
    except OSError:
        pass
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def child(mode: str, path: Path, data_dir: Path) -> None:
    result = {"parse": parse_only, "pipeline": pipeline}[mode](path, data_dir)
    result["peak_rss_mib"] = peak_rss_kib() / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "DATA_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path, data_dir = args.child
        child(mode, Path(path), Path(data_dir))
        return
    sys.path.insert(0, str(HERE))
    from corpus import write_audit_log
    with tempfile.TemporaryDirectory(prefix="ctrail-bench-ingest-") as tmp:
        path = Path(tmp) / "audit.log"
        size = write_audit_log(path, args.events)
        base = measure("parse", path, Path(tmp) / "unused")
        full = measure("pipeline", path, Path(tmp) / "data")
    rate_base, rate_full = base["events"] / base["secs"], full["events"] / full["secs"]
    cpu_base, cpu_full = base["events"] / base["cpu"], full["events"] / max(full["cpu"], 1e-9)
    print(f"input: {args.events} audit events, {size / 1e6:.1f} MB (bench/corpus.py: 99% benign, "
          "1% attacks)")
    print(f"orjson.loads alone: {rate_base:10.0f} events/s {cpu_base:10.0f} events per CPU-second"
          f"   peak RSS {base['peak_rss_mib']:.0f} MiB")
    print(f"ctrail ingest     : {rate_full:10.0f} events/s {cpu_full:10.0f} events per CPU-second"
          f"   peak RSS {full['peak_rss_mib']:.0f} MiB   {full['secs']:.1f} s wall, "
          f"{full['cpu']:.1f} CPU-s, {full['events']:.0f} of {args.events} stored, "
          f"{full['dead_letters']:.0f} dead-lettered")
    print(f"pipeline: {rate_full:.0f} events/s, {cpu_full:.0f} events per CPU-second")
    print(f"ratio pipeline/orjson: {rate_full / rate_base:.3f}")
    disk = full["store_bytes"] + full["log_bytes"]
    print(f"disk: store plus local log vs raw: {disk / size:.2f} (store "
          f"{full['store_bytes'] / 1e6:.1f} MB, local log {full['log_bytes'] / 1e6:.1f} MB, raw "
          f"{size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
