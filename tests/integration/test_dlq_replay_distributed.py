"""`ctrail dlq replay` on Kafka and Elasticsearch: parse failures are parsed again by the CLI
and go through the workers; an event Elasticsearch refused goes back to the process workers
(through ctrail.raw), whose store step refuses it again, and the replay reads that verdict back
from ctrail.dlq."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.test_distributed import Cluster, json_lines
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

# A valid audit record whose responseStatus.code Elasticsearch cannot index as a long.
TEAPOT = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"tea-1","verb":"get",'
          b'"stage":"ResponseComplete","requestReceivedTimestamp":"2026-03-01T10:00:00Z",'
          b'"user":{"username":"alice"},"responseStatus":{"code":"teapot"}}')


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    for stage in ("process", "correlate", "store"):
        running.start(stage, stage)
    yield running
    running.stop()


def test_replay_on_kafka_stores_what_parses_now_and_keeps_what_the_store_refuses(
        cluster: Cluster, real_data: Path, tmp_path: Path) -> None:
    falco = (real_data / "falco-alerts-json/falco_website_alerts.jsonl").read_bytes().splitlines()[:3]
    wrong = tmp_path / "falco.jsonl"
    wrong.write_bytes(b"\n".join(falco) + b"\n")
    audit = tmp_path / "audit.log"
    audit.write_bytes(TEAPOT + b"\n")
    assert cluster.ctrail("ingest", "--source", "k8s-audit", str(wrong)).stdout.strip() == \
        "0 accepted, 3 dead-lettered"
    assert cluster.ctrail("ingest", "--source", "k8s-audit", str(audit)).stdout.strip() == \
        "1 accepted, 0 dead-lettered"

    def standing() -> list[dict]:  # type: ignore[type-arg]
        return json_lines(cluster.ctrail("dlq", "list", "--format", "json"))
    wait_for(lambda: len(standing()) == 4)
    (refused,) = [d for d in standing() if d["stage"] == "store"]
    assert refused["reason"] == "rejected_by_store"

    replayed = cluster.ctrail("dlq", "replay", "--source", "falco")
    assert (replayed.returncode, replayed.stdout.strip()) == (0, "3 replayed, 1 still rejected"), \
        replayed.stderr
    wait_for(lambda: len(json_lines(cluster.ctrail(
        "search", "event.dataset:falco.alerts", "--format", "json"))) == 3)
    wait_for(lambda: [d["id"] for d in standing()] == [refused["id"]])

    again = cluster.ctrail("dlq", "replay", "--source", "falco")
    assert (again.returncode, again.stdout.strip()) == (0, "0 replayed, 1 still rejected"), \
        again.stderr
    time.sleep(2)            # what the second replay wrote is searchable after a refresh (1 s)
    ids = cluster.stored_ids()
    assert len(ids) == len(set(ids))
    assert len(json_lines(cluster.ctrail("search", "event.dataset:falco.alerts",
                                         "--format", "json"))) == 3
    assert len(json_lines(cluster.ctrail("dlq", "list", "--all", "--format", "json"))) == 4


def test_a_second_replay_while_one_runs_is_refused() -> None:
    """Replays share one consumer group on ctrail.dlq: a second member would take partitions
    from the first, which would then miss verdicts. So a second one does not start."""
    import uuid

    from ctrail.bus.kafka import KafkaBus
    from ctrail.bus.kafka_config import KafkaBusConfig
    from ctrail.errors import UsageError
    from ctrail.runtime.dlq_watch import DlqWatch
    from tests.services import kafka_bootstrap

    config = KafkaBusConfig(bootstrap_servers=kafka_bootstrap(),
                            namespace=f"t{uuid.uuid4().hex[:12]}.")
    first_bus, second_bus = KafkaBus(config), KafkaBus(config)
    try:
        running = DlqWatch(first_bus, 60)
        with pytest.raises(UsageError, match="another `ctrail dlq replay` is running"):
            DlqWatch(second_bus, 60)
        running.close()
    finally:
        first_bus.close()
        second_bus.close()
