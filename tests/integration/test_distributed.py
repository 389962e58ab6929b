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

from collector import build_parser
from collector.parsers.k8s_audit import DATASET_K8S_AUDIT
from ctrail.audit.trail import DATASET as AUDIT_DATASET
from ctrail.errors import Unavailable
from ctrail.identity import event_id
from ctrail.settings import load_settings
from tests.services import elasticsearch_url, kafka_bootstrap
from tests.waiting import wait_for

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
        """The ingested events stored: our own audit trail (the process workers' first-start
        rules-change record, searches) is stored beside them, and left out here."""
        store = load_settings(self.config).store.build(self.tmp)
        try:
            return [doc["event"]["id"] for doc in store.search(
                f"NOT event.dataset:{AUDIT_DATASET}", kind, limit=1_000_000)]
        finally:
            store.close()

    def stored_count(self) -> int:
        """How many events are searchable; 0 while Elasticsearch recovers its shards."""
        try:
            return len(self.stored_ids())
        except Unavailable:
            return 0

    def stop(self) -> None:
        """SIGTERM to every worker, each waited for (a worker left unwaited would haunt the next
        test as an unraisable warning), then each one's clean exit checked."""
        for proc in self.workers.values():
            proc.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, proc in self.workers.items():
            try:
                codes[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        failed = {name: code for name, code in codes.items() if code != 0}
        assert not failed, "\n".join(f"{name} exited {code}:\n" + (self.tmp / f"{name}.log")
                                      .read_text()[-3000:] for name, code in failed.items())

@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    yield running
    running.stop()



def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict]:  # type: ignore[type-arg]
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


QUERIES = ("*", "event.action:delete AND user.name:minikube-user",
           "kubernetes.audit.objectRef.resource:pods AND NOT user.name:system*",
           "kubernetes.namespace:kube-system", "source.ip:192.168.99.1", "nginx*",
           "@timestamp:[2018-10-25T00:00:00Z TO 2018-10-26T13:00:00Z]")


def ids_of(done: subprocess.CompletedProcess[str], key: str = "event") -> set[str]:
    return {doc[key]["id"] if key else doc["id"] for doc in json_lines(done)}


def test_kafka_and_elasticsearch_answer_as_embedded_mode_does(cluster: Cluster, real_data: Path,
                                                             tmp_path: Path) -> None:
    for stage in ("process", "correlate", "store"):
        cluster.start(stage, stage)
    cluster.start("store-2", "store")                 # two workers share the store stage
    files = [str(p) for p in sorted((real_data / "falco-k8saudit-traces/trace_files").glob("*.json"))]
    embedded = ["--data-dir", str(tmp_path / "embedded")]

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), *args, *embedded], cwd=REPO, capture_output=True,
                              text=True, timeout=300)

    alone = local("ingest", "--source", "k8s-audit", *files)
    ingest = cluster.ctrail("ingest", "--source", "k8s-audit", *files, "--wait", "120")
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stdout == alone.stdout                 # "51 accepted, 1 dead-lettered"
    accepted = int(alone.stdout.split()[0])

    # Searches see what Elasticsearch has refreshed (within a second).
    wait_for(lambda: len(cluster.stored_ids()) == accepted)
    for query in QUERIES:
        args = ("search", query, "--format", "json", "--limit", "10000")
        want = ids_of(local(*args))
        assert want, query
        assert ids_of(cluster.ctrail(*args)) == want, query
    alerts = ("alerts", "--rule", "CT-K8S-004", "--format", "json")
    assert ids_of(cluster.ctrail(*alerts)) == ids_of(local(*alerts)) != set()
    dead = ("dlq", "list", "--format", "json")
    assert ids_of(cluster.ctrail(*dead), key="") == ids_of(local(*dead), key="") != set()

    health = subprocess.run([str(EXE), "health", *cluster.args("store-2")], capture_output=True,
                            text=True, cwd=REPO)
    assert (health.returncode, health.stdout.strip()) == (0, "healthy: store")


def ingest_corpus(cluster: Cluster, tmp_path: Path, events: int
                  ) -> tuple[set[str], subprocess.Popen[str]]:
    log = tmp_path / "audit.log"
    write_audit_log(log, events)
    # Intake appends each line scrubbed of secrets (with the deployment's key, conftest), and
    # an event's id hashes what intake appended.
    settings = load_settings(cluster.config)
    scrub = build_parser("k8s-audit", tmp_path / "expected", settings.redaction).scrub
    expected = {event_id(DATASET_K8S_AUDIT, scrub(line))
                for line in log.read_bytes().splitlines()}
    ingest = subprocess.Popen([str(EXE), "ingest", "--source", "k8s-audit", str(log),
                               "--wait", "300", *cluster.args()], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return expected, ingest


def finish(cluster: Cluster, ingest: subprocess.Popen[str], expected: set[str]) -> None:
    out, err = ingest.communicate(timeout=400)
    assert ingest.returncode == 0, err
    assert out.strip() == f"{len(expected)} accepted, 0 dead-lettered"
    wait_for(lambda: cluster.stored_count() >= len(expected), timeout=180)
    ids = cluster.stored_ids()
    assert len(ids) == len(expected)                  # nothing twice...
    assert set(ids) == expected                       # ...and nothing lost


def test_kill_9_of_workers_mid_stream_loses_and_duplicates_nothing(cluster: Cluster,
                                                                   tmp_path: Path) -> None:
    for name, stage in (("process", "process"), ("process-2", "process"),
                        ("correlate", "correlate"), ("store", "store")):
        cluster.start(name, stage)                    # 2 process workers on 4 raw partitions
    expected, ingest = ingest_corpus(cluster, tmp_path, 20_000)
    wait_for(lambda: len(cluster.stored_ids()) > 1000, timeout=120)
    cluster.kill("process")                           # mid-batch, uncommitted work in flight
    cluster.kill("store")
    cluster.start("store", "store")                   # the others take the killed ones' share
    finish(cluster, ingest, expected)
    del cluster.workers["process"]


def test_elasticsearch_down_for_30_s_mid_stream_loses_nothing(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    for stage in ("process", "correlate", "store"):
        cluster.start(stage, stage)
    expected, ingest = ingest_corpus(cluster, tmp_path, 10_000)
    wait_for(lambda: len(cluster.stored_ids()) > 500, timeout=120)
    services = {**os.environ, "CTRAIL_SERVICES": "elasticsearch"}
    subprocess.run([str(REPO / "scripts/services"), "down"], env=services, check=True,
                   capture_output=True)
    try:
        time.sleep(30)                                # process and store back off, uncommitted
    finally:
        subprocess.run([str(REPO / "scripts/services"), "up"], env=services, check=True,
                       capture_output=True)
    finish(cluster, ingest, expected)
    for stage in ("process", "store"):
        assert subprocess.run([str(EXE), "health", *cluster.args(stage)], cwd=REPO,
                              capture_output=True).returncode == 0, stage
