"""bench/distributed: audit events end to end through Kafka into Elasticsearch, beside the raw
clients on the same records in the same run, and end-to-end latency at a fixed rate.

Needs the services: `eval "$(scripts/services up)"`, then
    .venv/bin/python bench/distributed.py [--events 20000] [--rate 1000] [--secs 20]
                                          [--warmup-secs 3] [--latency-only]

Figures (the ratios are what to quote; these machines are noisy):
- raw Kafka: kafka-python produce + flush, then consume, of the raw audit lines.
- raw Elasticsearch: `helpers.bulk` (create) of the same events as our documents.
- pipeline: `ctrail worker` process (parse, enrich, detect, store into Elasticsearch),
  correlate and store (alerts, dead letters) processes; `ctrail ingest` appends the file to
  ctrail.raw; the clock stops when Elasticsearch counts every audit event.
- latency: a `ctrail worker collect` tails an audit log that this script appends to at a fixed
  rate (1% of the corpus are attacks), beside process, correlate and store workers.
  - event-to-alert: from the append of an event to the moment its first single-event alert is
    read from ctrail.alerts by a consumer of our Kafka bus (what the notify stage would see),
    each alert's events found by their auditID (looked up in the store after the run);
    correlation alerts wait for their window by design and are left out;
  - event-to-searchable: from the append to the moment Elasticsearch's count covers the event
    (counts polled every 100 ms; with the default 1 s refresh interval, what a searching user
    sees);
  - both measured on the events after a warm-up (--warmup-secs, 3) at the same rate, whose
    alerts are reported on a line of their own: each bench run writes to a new namespace, whose
    data streams Elasticsearch creates at their first write (0.2-0.5 s each on this node, once
    in a deployment's life), and the backlog that builds meanwhile takes about a second to clear.
The last two lines are `pipeline/bulk: X` and `p99 event-to-alert at R events/s: M ms`.
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
from tests.services import (  # noqa: E402
    elasticsearch_url,
    empty_elasticsearch_namespace,
    kafka_bootstrap,
)

AUDIT_EVENTS = "event.dataset:kubernetes.audit"
STAGES = ("process", "correlate", "store")          # what a distributed deployment runs


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
    rate = len(lines) / (time.perf_counter() - start)
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    admin.delete_topics([topic])
    admin.close()
    return rate


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
    client = Elasticsearch(elasticsearch_url())

    def bulk_into_new_namespace(some: list[dict[str, object]]) -> float:
        namespace = "r" + uuid.uuid4().hex[:10]
        ElasticsearchConfig(hosts=[elasticsearch_url()], namespace=namespace).build(REPO).close()
        stream = f"logs-containertrail.kubernetes.audit-{namespace}"
        start = time.perf_counter()
        helpers.bulk(client, ({"_op_type": "create", "_index": stream, "_id": d["event"]["id"],
                               "_source": d} for d in some), chunk_size=1000)
        rate = len(some) / (time.perf_counter() - start)
        empty_elasticsearch_namespace(namespace, close=True)
        return rate

    # A node started moments ago runs its first requests slowly while its JVM compiles them: a
    # warm-up first, so that a cold baseline does not flatter the ratio (0.88 once, against
    # ~0.5 warm).
    bulk_into_new_namespace(docs[:5000])
    rate = bulk_into_new_namespace(docs)
    client.close()
    return rate


class Workers:
    def __init__(self, tmp: Path, extra_config: str = "") -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        namespace = self.namespace = "b" + uuid.uuid4().hex[:10]
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
        """Audit events stored (our own audit trail, the rules-change record, left out)."""
        store = load_settings(self.config).store.build(self.tmp)
        try:
            return store.count(AUDIT_EVENTS, "events")
        finally:
            store.close()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)
        self.remove_data()

    def remove_data(self) -> None:
        """What the run left in the services: its Kafka topics go, and its data streams are
        emptied and closed (this Elasticsearch cannot delete a data stream)."""
        from ctrail.bus import ALL_TOPICS

        empty_elasticsearch_namespace(self.namespace, close=True)
        config = load_settings(self.config).bus
        bus = config.build(None)
        try:
            bus.admin.delete_topics([config.topic_name(topic) for topic in ALL_TOPICS])
        finally:
            bus.close()


def pipeline(path: Path, events: int, tmp: Path) -> float:
    workers = Workers(tmp / "pipeline")
    try:
        for stage in STAGES:
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


class AlertWatch:
    """Reads ctrail.alerts through our Kafka bus (as the notify stage does) in a thread of its
    own; notes when each event id first appears in an alert."""

    def __init__(self, config: Path) -> None:
        from ctrail.bus import ALERTS

        settings = load_settings(config)
        # Correlation alerts wait for their pattern's window by design: left out here.
        self.correlations = {rule.id for rule in settings.detection.build().correlations.rules}
        self.bus = settings.bus.build(None)
        self.consumer = self.bus.consumer("bench-alerts", [ALERTS])
        self.first_seen: dict[str, float] = {}
        self.alerts = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ctrail.bus import ALERTS
        from ctrail.bus.codec import decode
        from ctrail.event import Alert

        while not self._stop.is_set():
            records = self.consumer.poll(1000, timeout_secs=0.2)
            now = time.monotonic()
            for record in records:
                alert = decode(ALERTS, record.value)
                assert isinstance(alert, Alert)
                if alert.rule.id in self.correlations:
                    continue
                self.alerts += 1
                for event_id in alert.alert.event_ids:
                    self.first_seen.setdefault(event_id, now)
            self.consumer.commit(records)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        self.bus.close()                               # closes its consumer too


def audit_ids(config: Path, tmp: Path, event_ids: list[str]) -> dict[str, str]:
    """event.id -> the auditID of the stored event."""
    store = load_settings(config).store.build(tmp)
    found: dict[str, str] = {}
    try:
        for i in range(0, len(event_ids), 200):
            chunk = event_ids[i:i + 200]
            query = "event.id:(" + " OR ".join(f'"{e}"' for e in chunk) + ")"
            for doc in store.search_lucene(query, limit=len(chunk)):
                audit = (doc.get("kubernetes") or {}).get("audit") or {}
                if "auditID" in audit:
                    found[doc["event"]["id"]] = audit["auditID"]
    finally:
        store.close()
    return found


def latency(rate: int, secs: int, warmup: int, tmp: Path
            ) -> tuple[list[float], list[float], list[float], int]:
    """(event-to-alert delays, the same for the warm-up's events, event-to-searchable delays,
    alerts read), in seconds. The first `warmup` seconds of events are sent at the same rate
    and kept apart: they pay once for what a new namespace does at its first events."""
    audit = tmp / "latency" / "audit.log"
    audit.parent.mkdir(parents=True, exist_ok=True)
    audit.touch()
    workers = Workers(tmp / "latency", f"""
sources: {{apiserver-log: {{type: k8s_audit_file, path: "{audit}", poll_interval_secs: 0.05}}}}
""")
    shapes = tmp / "shapes.log"
    write_audit_log(shapes, rate * (warmup + secs))
    lines = shapes.read_bytes().splitlines(keepends=True)
    line_of = {orjson.loads(line)["auditID"]: i for i, line in enumerate(lines)}
    watch: AlertWatch | None = None
    try:
        for stage in ("collect", *STAGES):
            workers.start(stage)
        watch = AlertWatch(workers.config)
        time.sleep(8)
        # Counts are polled in a thread of their own while the log is written.
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def poll() -> None:
            store = load_settings(workers.config).store.build(workers.tmp)
            try:
                while not done.is_set():
                    samples.append((time.monotonic(), store.count(AUDIT_EVENTS, "events")))
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
                    time.sleep(0.0005)
                out.write(line)
                out.flush()
                sent.append(time.monotonic())
        poller.join(timeout=120)
        done.set()
        time.sleep(2)                                  # the last alerts on their way
        watch.close()
        # Event k is visible at the first sample counting more than k events.
        searchable, k = [], 0
        for at, count in samples:
            while k < min(count, len(sent)):
                searchable.append(at - sent[k])
                k += 1
        ids = audit_ids(workers.config, workers.tmp, list(watch.first_seen))
        measured_from = rate * warmup                  # the first line after the warm-up
        to_alert: list[float] = []
        warming: list[float] = []
        for event_id, audit_id in ids.items():
            if audit_id in line_of:
                line = line_of[audit_id]
                delay = watch.first_seen[event_id] - sent[line]
                (to_alert if line >= measured_from else warming).append(delay)
        return to_alert, warming, searchable[measured_from:], watch.alerts
    finally:
        if watch is not None:
            watch.close()
        workers.stop()


def percentile(delays: list[float], fraction: float) -> float:
    ordered = sorted(delays)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the latency run")
    parser.add_argument("--secs", type=int, default=20, help="length of the latency run")
    parser.add_argument("--warmup-secs", type=int, default=3,
                        help="seconds of events sent before the latency run, kept apart")
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.latency_only:
            kafka_rate = bulk_rate = pipe_rate = float("nan")
        else:
            path = tmp / "audit.log"
            write_audit_log(path, args.events)
            lines = path.read_bytes().splitlines()
            kafka_rate = raw_kafka(lines)
            bulk_rate = raw_bulk(lines)
            pipe_rate = pipeline(path, args.events, tmp)
        to_alert, warming, searchable, alerts = latency(args.rate, args.secs,
                                                        args.warmup_secs, tmp)
    print(f"input: {args.events} audit events")
    print(f"raw kafka-python produce+consume : {kafka_rate:9.0f} events/s")
    print(f"raw helpers.bulk into ES          : {bulk_rate:9.0f} events/s")
    print(f"pipeline (Kafka workers -> ES)    : {pipe_rate:9.0f} events/s")
    print(f"pipeline/raw kafka: {pipe_rate / kafka_rate:.3f}")
    if searchable:
        print(f"event-to-searchable at {args.rate} events/s for {args.secs} s "
              f"({len(searchable)} events): p50 {statistics.median(searchable) * 1000:.0f} ms"
              f"   p99 {percentile(searchable, 0.99) * 1000:.0f} ms")
    if to_alert:
        print(f"event-to-alert ({len(to_alert)} alerting events, {alerts} alerts): "
              f"p50 {statistics.median(to_alert) * 1000:.0f} ms   "
              f"max {max(to_alert) * 1000:.0f} ms")
    if warming:
        print(f"event-to-alert in the {args.warmup_secs} s warm-up ({len(warming)} alerting "
              f"events; a new namespace's data streams are created then): p50 "
              f"{statistics.median(warming) * 1000:.0f} ms   max {max(warming) * 1000:.0f} ms")
    print(f"pipeline/bulk: {pipe_rate / bulk_rate:.3f}")
    p99 = f"{percentile(to_alert, 0.99) * 1000:.0f}" if to_alert else "n/a (no alert read)"
    print(f"p99 event-to-alert at {args.rate} events/s: {p99} ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    main()
