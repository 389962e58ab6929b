"""Distributed mode as users run it: `ctrail worker` processes on the real Kafka, storing into
the real Elasticsearch; `ctrail ingest` publishes and waits; `search`, `alerts` and `dlq list`
answer from Elasticsearch. And kill -9 of workers mid-flow loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from collector.identity import event_id
from collector.parsers.k8s_audit import DATASET_K8S_AUDIT
from ctrail.settings import load_settings
from tests.services import elasticsearch_url, kafka_bootstrap

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
sys.path.insert(0, str(REPO / "bench"))
from corpus import write_audit_log  # noqa: E402  (shared with bench/)


class Cluster:
    """A config for a namespace of its own on both servers, and the workers started on it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        namespace = "t" + uuid.uuid4().hex[:12]
        self.config = tmp_path / "ctrail.yaml"
        self.config.write_text(f"""
bus:
  type: kafka
  bootstrap_servers: "{kafka_bootstrap()}"
  namespace: "{namespace}."
  partitions: {{raw: 4, events: 4, alerts: 2, dlq: 2, entities: 1}}
store:
  type: elasticsearch
  hosts: ["{elasticsearch_url()}"]
  namespace: {namespace}
""")
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, stage: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")
        self.workers[name] = subprocess.Popen(
            [str(EXE), "worker", stage, *self.args(name)], cwd=REPO, stdout=log, stderr=log)
        log.close()

    def kill(self, name: str) -> None:
        os.kill(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()

    def args(self, name: str = "cli") -> list[str]:
        return ["--config", str(self.config), "--data-dir", str(self.tmp / name)]

    def ctrail(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), *args, *self.args()], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)

    def stored_ids(self, kind: str = "events") -> list[str]:
        store = load_settings(self.config).store.build(self.tmp)
        try:
            return [doc["event"]["id"] for doc in store.search("*", kind, limit=1_000_000)]
        finally:
            store.close()

    def stop(self) -> None:
        for name, proc in self.workers.items():
            proc.send_signal(signal.SIGTERM)
        for name, proc in self.workers.items():
            try:
                assert proc.wait(timeout=60) == 0, (self.tmp / f"{name}.log").read_text()
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    yield running
    running.stop()


def wait_for(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.5)


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict]:  # type: ignore[type-arg]
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def test_workers_on_kafka_store_the_real_samples_in_elasticsearch(cluster: Cluster,
                                                                  real_data: Path) -> None:
    for stage in ("enrich", "detect", "store"):
        cluster.start(stage, stage)
    cluster.start("store-2", "store")                 # two workers share the store stage
    files = sorted((real_data / "falco-k8saudit-traces/trace_files").glob("*.json"))
    lines = {line for path in files for line in path.read_bytes().splitlines() if line.strip()}

    ingest = cluster.ctrail("ingest", "--source", "k8s-audit", *map(str, files), "--wait", "120")
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stdout.strip() == f"{len(lines) - 1} accepted, 1 dead-lettered"

    # Searches see what Elasticsearch has refreshed (within a second).
    wait_for(lambda: len(cluster.stored_ids()) == len(lines) - 1)
    deletes = json_lines(cluster.ctrail("search", "event.action:delete AND user.name:minikube-user",
                                        "--format", "json", "--limit", "1000"))
    assert len(deletes) == sum(1 for line in lines
                               if b'"verb":"delete"' in line.replace(b" ", b"")
                               and b"minikube-user" in line)
    execs = json_lines(cluster.ctrail("alerts", "--rule", "CT-K8S-004", "--format", "json"))
    assert execs and {a["rule"]["id"] for a in execs} == {"CT-K8S-004"}
    (dead,) = json_lines(cluster.ctrail("dlq", "list", "--format", "json"))
    assert dead["reason"] == "schema_mismatch" and dead["origin"].endswith("fal_01_003.json:1")

    health = subprocess.run([str(EXE), "health", *cluster.args("store-2")], capture_output=True,
                            text=True, cwd=REPO)
    assert (health.returncode, health.stdout.strip()) == (0, "healthy: store")


def test_kill_9_of_workers_mid_flow_loses_and_duplicates_nothing(cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_audit_log(log, 20_000)
    expected = {event_id(DATASET_K8S_AUDIT, line) for line in log.read_bytes().splitlines()}
    for stage in ("enrich", "detect", "store"):
        cluster.start(stage, stage)
    ingest = subprocess.Popen([str(EXE), "ingest", "--source", "k8s-audit", str(log),
                               "--wait", "300", *cluster.args()], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(cluster.stored_ids()) > 1000, timeout=120)
    cluster.kill("enrich")                           # mid-batch, uncommitted work in flight
    cluster.kill("store")
    cluster.start("enrich", "enrich")
    cluster.start("store", "store")
    out, err = ingest.communicate(timeout=360)
    assert ingest.returncode == 0, err
    assert out.strip() == "20000 accepted, 0 dead-lettered"
    wait_for(lambda: len(cluster.stored_ids()) >= len(expected))
    ids = cluster.stored_ids()
    assert len(ids) == len(expected) == 20_000
    assert set(ids) == expected
