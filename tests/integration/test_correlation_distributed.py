"""Correlation across workers on the real Kafka: one user's events are spread over the raw
partitions, so they reach both process workers; their candidates are repartitioned through
ctrail.correlate by correlation group, so the user's window is whole in one correlate worker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests.integration.test_distributed import Cluster, json_lines

pytestmark = pytest.mark.integration
USERS = ("system:serviceaccount:a:prober", "system:serviceaccount:b:prober", "mallory")


def forbidden(n: int, user: str, start: datetime) -> bytes:
    when = (start + timedelta(seconds=5 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    namespace, pod = f"ns-{n % 7}", f"pod-{n}"       # spread over the partitions
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"{abs(hash(user)) % 10**8:08d}-0000-4000-8000-{n:012d}",
        "stage": "ResponseComplete", "verb": "get", "user": {"username": user},
        "requestURI": f"/api/v1/namespaces/{namespace}/pods/{pod}",
        "objectRef": {"resource": "pods", "namespace": namespace, "name": pod, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 403},
        "requestReceivedTimestamp": when, "stageTimestamp": when})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    yield running
    running.stop()


def test_two_process_and_two_correlate_workers_fire_each_users_correlation_once(
        cluster: Cluster, tmp_path: Path) -> None:
    for name, stage in [("process-1", "process"), ("process-2", "process"),
                        ("correlate-1", "correlate"), ("correlate-2", "correlate"),
                        ("store", "store")]:
        cluster.start(name, stage)
    start = datetime.now(timezone.utc) - timedelta(minutes=3)
    log = tmp_path / "audit.log"
    # 12 forbidden requests each for two users (one window each), 9 for a third (no alert).
    lines = [forbidden(n, user, start) for user in USERS for n in range(9 if user == "mallory"
                                                                          else 12)]
    log.write_bytes(b"\n".join(lines) + b"\n")
    done = cluster.ctrail("ingest", "--source", "k8s-audit", str(log), "--wait", "240")
    assert done.returncode == 0, done.stderr
    want = 2
    deadline = time.monotonic() + 30          # Elasticsearch shows writes after its refresh
    while len(alerts := json_lines(cluster.ctrail("alerts", "--rule", "CT-COR-003", "--format",
                                                  "json"))) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)                           # one more refresh: a third alert would show now
    alerts = json_lines(cluster.ctrail("alerts", "--rule", "CT-COR-003", "--format", "json"))
    assert sorted(a["alert"]["group_key"] for a in alerts) == [
        f"CT-COR-003|{USERS[0]}", f"CT-COR-003|{USERS[1]}"]
    assert all(a["alert"]["count"] == 10 for a in alerts)
