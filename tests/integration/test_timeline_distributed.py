"""`ctrail timeline` answers the same in embedded mode (local log, SQLite) and distributed mode
(`ctrail worker` processes on the real Kafka, storing into the real Elasticsearch): the graph is
rebuilt from the entities topic on either bus, the events come from either store."""

from __future__ import annotations

import difflib
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.services import elasticsearch_url, kafka_bootstrap

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from test_timeline import (  # noqa: E402
    D1,
    OUT_OF_ORDER,
    SHORT,
    a_week_ago,
    check_container_timeline,
    write_scenario,
)


def ctrail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def distributed(tmp_path: Path) -> Iterator[list[str]]:
    namespace = "t" + uuid.uuid4().hex[:12]
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
bus:
  type: kafka
  bootstrap_servers: "{kafka_bootstrap()}"
  namespace: "{namespace}."
  partitions: {{raw: 4, events: 4, alerts: 1, dlq: 1, entities: 3}}
store:
  type: elasticsearch
  hosts: ["{elasticsearch_url()}"]
  namespace: {namespace}
""")
    workers = []
    for stage in ("process", "correlate", "store"):
        log = open(tmp_path / f"{stage}.log", "ab")
        workers.append(subprocess.Popen(
            [str(EXE), "worker", stage, "--config", str(config), "--data-dir",
             str(tmp_path / stage)], cwd=REPO, stdout=log, stderr=log))
        log.close()
    yield ["--config", str(config), "--data-dir", str(tmp_path / "cli")]
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        proc.wait(timeout=60)


def timelines(args: list[str]) -> dict[str, list[dict[str, Any]]]:
    answers = {}
    for subject in (["--container", SHORT], ["--image", "registry.example.com/team/api:1.4"],
                    ["--image", D1], ["--user", "alice@example.com"]):
        done = ctrail("timeline", *subject, "--format", "json", *args)
        assert done.returncode == 0, done.stderr
        answers[" ".join(subject)] = [without_ingest_time(orjson.loads(line))
                                      for line in done.stdout.splitlines()]
    return answers


def without_ingest_time(doc: dict[str, Any]) -> dict[str, Any]:
    """Each mode ingested the files itself, so only event.ingested may differ."""
    if "event" in doc:
        doc["event"].pop("ingested")
    return doc


# Several partitions: the workers enrich events of different pods in another order than
# embedded mode, so what an event was stored with (the graph's knowledge at that moment) differs
# between the modes; the timeline shows it with today's graph, and the answers are identical.
def test_embedded_and_distributed_timelines_are_identical(distributed: list[str],
                                                          tmp_path: Path) -> None:
    files = write_scenario(tmp_path, a_week_ago())
    embedded = ["--data-dir", str(tmp_path / "embedded")]
    for source in OUT_OF_ORDER:           # runtime and Falco before the audit events
        for args in (embedded, distributed):
            done = ctrail("ingest", "--source", source, str(files[source]), *args)
            assert done.returncode == 0, done.stderr
    expected = timelines(embedded)
    check_container_timeline(expected["--container " + SHORT])
    deadline = time.monotonic() + 60      # Elasticsearch shows writes after its refresh
    while (got := timelines(distributed)) != expected and time.monotonic() < deadline:
        time.sleep(1)
    assert got == expected, difference(expected, got)


def difference(expected: dict[str, Any], got: dict[str, Any]) -> str:
    lines = []
    for subject in expected:
        lines += difflib.unified_diff(
            orjson.dumps(expected[subject], option=orjson.OPT_INDENT_2).decode().splitlines(),
            orjson.dumps(got.get(subject), option=orjson.OPT_INDENT_2).decode().splitlines(),
            f"embedded {subject}", f"distributed {subject}", lineterm="", n=2)
    return "\n".join(lines)
