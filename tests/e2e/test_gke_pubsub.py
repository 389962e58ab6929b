"""GKE audit logs from a Pub/Sub pull subscription (source `gcp_pubsub`), against Google's
Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator) with the official client:
real exported Cloud Audit Log entries are read, acknowledged only when committed (a restart
redelivers nothing acknowledged and everything else), a failed batch comes again at once, and
`ctrail run` stores them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from collector.sources.gcp_pubsub import GcpPubSubConfig, GcpPubSubSource
from ctrail.components import RawRecord
from tests.ctrail_process import ctrail_running, json_lines
from tests.waiting import wait_for

pubsub_v1 = pytest.importorskip("google.cloud.pubsub_v1")
EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
GKE_SAMPLE = "elastic-k8s-audit-pipeline-tests/test-audit.log"
PROJECT = "ctrail-test"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = EMULATOR if EMULATOR.is_file() else shutil.which("cloud-pubsub-emulator")
    if binary is None:
        pytest.skip("no Pub/Sub emulator here (apt install google-cloud-cli-pubsub-emulator)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(binary), "--host=127.0.0.1", f"--port={port}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Server started" in log.read_text(), timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def subscription(emulator: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """A fresh topic (the Logging sink's) and its pull subscription; returns the subscription
    path and a function publishing messages."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    name = uuid.uuid4().hex[:10]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"gke-audit-{name}")
    path = subscriber.subscription_path(PROJECT, f"ctrail-{name}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=path, topic=topic, ack_deadline_seconds=60)
    subscriber.close()

    def publish(messages: list[bytes]) -> None:
        for future in [publisher.publish(topic, m) for m in messages]:
            future.result(timeout=30)
    return path, publish


@pytest.fixture(scope="module")
def entry(real_data: Path) -> dict[str, Any]:
    """The real GKE Cloud Audit Log entry of Elastic's test input."""
    line = next(li for li in (real_data / GKE_SAMPLE).read_text().splitlines()
                if "protoPayload" in li)
    return json.loads(line)  # type: ignore[no-any-return]


def gke_entry(entry: dict[str, Any], insert_id: str, user: str = "alice@example.com") -> bytes:
    payload = {**entry["protoPayload"], "authenticationInfo": {"principalEmail": user}}
    return json.dumps({**entry, "insertId": insert_id, "protoPayload": payload}).encode()


def source(path: str) -> GcpPubSubSource:
    return GcpPubSubConfig(subscription=path, pull_timeout_secs=2).build("gke", Path("."), 1 << 20)


def drain(src: GcpPubSubSource, count: int, commit: bool = True) -> list[RawRecord]:
    records: list[RawRecord] = []
    deadline = time.monotonic() + 30
    while len(records) < count:
        assert time.monotonic() < deadline, f"{len(records)} of {count} came"
        batch = src.read(100)
        if commit:
            src.commit(batch)
        records.extend(batch)
    return records


def insert_ids(records: list[RawRecord]) -> list[str]:
    return [json.loads(r.data)["insertId"] for r in records]


def test_entries_are_acknowledged_only_when_committed(
        subscription: tuple[str, Any], entry: dict[str, Any]) -> None:
    path, publish = subscription
    publish([gke_entry(entry, f"e{i}") for i in range(120)])
    src = source(path)
    assert sorted(insert_ids(drain(src, 120))) == sorted(f"e{i}" for i in range(120))
    src.close()
    publish([gke_entry(entry, "late")])
    restarted = source(path)
    assert insert_ids(drain(restarted, 1)) == ["late"]          # nothing acknowledged again
    assert restarted.read(100) == []
    restarted.close()


def test_a_failed_batch_comes_again_and_a_restart_redelivers_what_was_not_stored(
        subscription: tuple[str, Any], entry: dict[str, Any]) -> None:
    path, publish = subscription
    publish([gke_entry(entry, f"f{i}") for i in range(5)])
    src = source(path)
    first = drain(src, 5, commit=False)
    again = drain(src, 5, commit=False)                # not committed: given back at once
    assert sorted(insert_ids(again)) == sorted(insert_ids(first))
    src.close()                                        # read, never stored: given back
    restarted = source(path)
    assert sorted(insert_ids(drain(restarted, 5))) == [f"f{i}" for i in range(5)]
    restarted.close()


def test_ctrail_run_stores_gke_audit_events(subscription: tuple[str, Any],
                                            entry: dict[str, Any], tmp_path: Path) -> None:
    path, publish = subscription
    publish([gke_entry(entry, f"r{i}", user="gke-admin@example.com") for i in range(25)])
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"sources:\n  gke-prod: {{type: gcp_pubsub, subscription: {path}}}\n")
    data_dir = tmp_path / "data"
    with ctrail_running(config, data_dir):
        wait_for(lambda: json_lines(config, data_dir, "search",
                                    "user.name:gke-admin@example.com") == 25, timeout=90)
