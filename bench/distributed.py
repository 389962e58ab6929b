"""bench/distributed: audit events end to end through Kafka into Elasticsearch, beside the raw
clients on the same records in the same run, and end-to-end latency at a fixed rate.

Needs the services: `eval "$(scripts/services up)"`, then
    .venv/bin/python bench/distributed.py [--events 20000] [--rate 200] [--secs 20]

Figures (the ratios are what to quote; these machines are noisy):
- raw Kafka: kafka-python produce + flush, then consume, of the raw audit lines.
- raw Elasticsearch: `helpers.bulk` (create) of the same events as our documents.
- pipeline: `ctrail worker` enrich, detect and store processes; `ctrail ingest` publishes the
  file; the clock stops when Elasticsearch counts every event.
- latency: a `ctrail worker collect` tails an audit log that this script appends to at a fixed
  rate; an event's latency is from its append to the moment Elasticsearch's count covers it
  (counts are polled every 100 ms; with the default 1 s refresh interval, that is what a
  searching user sees).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
EXE = Path(sys.executable).with_name("ctrail")

from corpus import write_audit_log  # noqa: E402
from ctrail.settings import load_settings  # noqa: E402
from tests.services import elasticsearch_url, kafka_bootstrap  # noqa: E402


def raw_kafka(lines: list[bytes]) -> float:
    from kafka import KafkaConsumer, KafkaProducer
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap(), acks="all", linger_ms=5,
                             batch_size=256 * 1024)
    for i, line in enumerate(lines):
        producer.send(topic, key=str(i % 64).encode(), value=line)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap(),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=topic)
    seen = 0
    while seen < len(lines):
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
    consumer.close()
    return len(lines) / (time.perf_counter() - start)


def raw_bulk(lines: list[bytes]) -> float:
    from datetime import datetime, timezone

    from elasticsearch import Elasticsearch, helpers

    from collector.parsers.k8s_audit import K8sAuditParser
    from ctrail.bus.codec import encode
    from ctrail.components import RawRecord
    parser, now = K8sAuditParser(), datetime.now(timezone.utc)
    docs = [orjson.loads(encode(event)) for line in lines
            for event in parser.parse(RawRecord(line, "bench", now))]
    # Into a data stream under our own templates (installed by building the store), as the
    # pipeline writes: without them dynamic mapping refuses some audit fields.
    from sinks.elasticsearch import ElasticsearchConfig
    namespace = "r" + uuid.uuid4().hex[:10]
    ElasticsearchConfig(hosts=[elasticsearch_url()], namespace=namespace).build(REPO).close()
    stream = f"logs-containertrail.kubernetes.audit-{namespace}"
    client = Elasticsearch(elasticsearch_url())
    start = time.perf_counter()
    helpers.bulk(client, ({"_op_type": "create", "_index": stream, "_id": d["event"]["id"],
                           "_source": d} for d in docs), chunk_size=1000)
    rate = len(docs) / (time.perf_counter() - start)
    client.close()
    return rate


class Workers:
    def __init__(self, tmp: Path, extra_config: str = "") -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        namespace = "b" + uuid.uuid4().hex[:10]
        self.config = tmp / "ctrail.yaml"
        self.config.write_text(f"""
bus: {{type: kafka, bootstrap_servers: "{kafka_bootstrap()}", namespace: "{namespace}."}}
store: {{type: elasticsearch, hosts: ["{elasticsearch_url()}"], namespace: {namespace}}}
{extra_config}""")
        self.procs: list[subprocess.Popen[bytes]] = []

    def args(self, name: str) -> list[str]:
        return ["--config", str(self.config), "--data-dir", str(self.tmp / name)]

    def start(self, stage: str) -> None:
        log = open(self.tmp / f"{stage}.log", "ab")
        self.procs.append(subprocess.Popen([str(EXE), "worker", stage, *self.args(stage)],
                                           cwd=REPO, stdout=log, stderr=log))

    def count(self) -> int:
        store = load_settings(self.config).store.build(self.tmp)
        try:
            return store.count("*", "events")
        finally:
            store.close()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)


def pipeline(path: Path, events: int, tmp: Path) -> float:
    workers = Workers(tmp / "pipeline")
    try:
        for stage in ("enrich", "detect", "correlate", "store"):
            workers.start(stage)
        time.sleep(5)                                   # let the groups form first
        start = time.perf_counter()
        subprocess.run([str(EXE), "ingest", "--source", "k8s-audit", str(path),
                        *workers.args("cli")], cwd=REPO, check=True)
        while workers.count() < events:
            time.sleep(0.1)
        return events / (time.perf_counter() - start)
    finally:
        workers.stop()


def latency(rate: int, secs: int, tmp: Path) -> list[float]:
    audit = tmp / "latency" / "audit.log"
    audit.parent.mkdir(parents=True, exist_ok=True)
    audit.touch()
    workers = Workers(tmp / "latency", f"""
sources: {{apiserver-log: {{type: k8s_audit_file, path: "{audit}", poll_interval_secs: 0.05}}}}
""")
    shapes = tmp / "shapes.log"
    write_audit_log(shapes, rate * secs)
    lines = shapes.read_bytes().splitlines(keepends=True)
    try:
        for stage in ("collect", "enrich", "detect", "correlate", "store"):
            workers.start(stage)
        time.sleep(8)
        # Counts are polled in a thread of their own while the log is written.
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def poll() -> None:
            store = load_settings(workers.config).store.build(workers.tmp)
            try:
                while not done.is_set():
                    samples.append((time.monotonic(), store.count("*", "events")))
                    if samples[-1][1] >= len(lines):
                        return
                    time.sleep(0.1)
            finally:
                store.close()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        sent: list[float] = []
        with open(audit, "ab") as out:
            start = time.monotonic()
            for i, line in enumerate(lines):
                while time.monotonic() < start + i / rate:
                    time.sleep(0.001)
                out.write(line)
                out.flush()
                sent.append(time.monotonic())
        poller.join(timeout=120)
        done.set()
        # Event k is visible at the first sample counting more than k events.
        delays, k = [], 0
        for at, count in samples:
            while k < min(count, len(sent)):
                delays.append(at - sent[k])
                k += 1
        return delays
    finally:
        workers.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=200, help="events/s for the latency run")
    parser.add_argument("--secs", type=int, default=20, help="length of the latency run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "audit.log"
        write_audit_log(path, args.events)
        lines = path.read_bytes().splitlines()
        kafka_rate = raw_kafka(lines)
        bulk_rate = raw_bulk(lines)
        pipe_rate = pipeline(path, args.events, tmp)
        delays = sorted(latency(args.rate, args.secs, tmp))
    print(f"input: {args.events} audit events")
    print(f"raw kafka-python produce+consume : {kafka_rate:9.0f} events/s")
    print(f"raw helpers.bulk into ES          : {bulk_rate:9.0f} events/s")
    print(f"pipeline (Kafka workers -> ES)    : {pipe_rate:9.0f} events/s")
    print(f"ratio pipeline/raw kafka: {pipe_rate / kafka_rate:.3f}   "
          f"pipeline/raw bulk: {pipe_rate / bulk_rate:.3f}")
    if delays:
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"latency at {args.rate} events/s for {args.secs} s ({len(delays)} events): "
              f"p50 {statistics.median(delays):.2f} s   p99 {p99:.2f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    main()
