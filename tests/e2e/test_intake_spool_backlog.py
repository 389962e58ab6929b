"""The intake spool's backlog in `ctrail run`'s /metrics and /readyz, against the real Kafka.

Kafka refuses every record on ctrail.raw of the test's namespace for a while (its
max.message.bytes set below a webhook batch's size: MESSAGE_TOO_LARGE), while the rest of Kafka
keeps working. What must hold: each webhook batch answered 200 meanwhile adds
exactly its records to ctrail_intake_spool_records (and its bytes to ctrail_intake_spool_bytes,
which only grow), the oldest record's age grows, /readyz names the backlog without failing;
once ctrail.raw takes writes again (after a kill -9 and a new start, see below) every figure
returns to 0 and every acknowledged event is stored, once. A `ctrail worker collect` (sources
in its own process) shows the same figures.

Why a restart: within one process, after kafka-python 3.0.12's idempotent producer aborted a
split MESSAGE_TOO_LARGE batch as fatal, the forwarder's next producer sometimes waited 40 s to
over 2 minutes for metadata once the limit was restored (1 run in 5 on a quiet machine, more
on a busy one), which would make this test slow and flaky; a new process ships at once."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ctrail.bus import RAW
from ctrail.bus.kafka import MAX_MESSAGE_BYTES
from ctrail.bus.kafka_config import KafkaBusConfig
from tests.e2e.test_disk_full import batch_body, kill_9, post, readyz, start
from tests.e2e.test_disk_full_kafka import stored_names
from tests.e2e.test_run import free_port
from tests.services import kafka_bootstrap
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
BACKLOG = ("ctrail_intake_spool_records", "ctrail_intake_spool_bytes",
           "ctrail_intake_spool_oldest_record_age_seconds")


def metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics, by name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": "Bearer disk-token"})
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        conn.close()
    return {name: float(value) for name, value in
            (line.split(" ") for line in text.splitlines()
             if line and not line.startswith("#") and "{" not in line)}


def backlog(port: int) -> tuple[float, ...]:
    """The spool's figures; -1 each until reported (or while the ops server is not up)."""
    try:
        figures = metrics(port)
    except OSError:
        figures = {}
    return tuple(figures.get(name, -1.0) for name in BACKLOG)


def set_raw_max_message_bytes(config: KafkaBusConfig, limit: int) -> None:
    bus = config.build()                    # imports kafka-python past its import warnings
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        raw = config.topic_name(RAW)
        wanted = {"max.message.bytes": str(limit)}
        bus.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, raw, configs=wanted)])

        def applied() -> bool:     # a topic's new config reaches the broker asynchronously
            described = bus.admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, raw)])["topic"][raw]
            return bool(described.get("max.message.bytes", {}).get("value") == str(limit))
        wait_for(applied, timeout=30)
    finally:
        bus.close()


def write_config(tmp_path: Path) -> tuple[Path, int, int, KafkaBusConfig]:
    """(config file, webhook port, ops port, the Kafka bus config of its namespace)."""
    port, ops_port = free_port(), free_port()
    namespace = f"t{uuid.uuid4().hex[:12]}."
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
bus:
  type: kafka
  bootstrap_servers: "{kafka_bootstrap()}"
  namespace: "{namespace}"
  intake_spool: true
  intake_min_free_bytes: 0
  delivery_timeout_secs: 3
  session_timeout_secs: 6         # the killed run's consumers leave the groups sooner
store: {{type: sqlite, path: {tmp_path / "store" / "store.sqlite3"}}}
sources:
  apiserver-webhook: {{type: k8s_audit_webhook, port: {port}, token: {{env: DISK_TOKEN}}}}
ops: {{port: {ops_port}, token: {{env: DISK_TOKEN}}}}
""")
    return config, port, ops_port, KafkaBusConfig(bootstrap_servers=kafka_bootstrap(),
                                                  namespace=namespace)


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then what the process wrote on stderr; it must end cleanly."""
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return err


def test_the_backlog_grows_by_what_was_acknowledged_and_returns_to_zero_once_shipped(
        tmp_path: Path) -> None:
    config, port, ops_port, kafka = write_config(tmp_path)
    acked: list[str] = []
    proc = start(config, tmp_path / "data")
    try:
        wait_for(lambda: post(port, b'{"kind":"EventList","items":[]}')[0] == 200, timeout=60)
        wait_for(lambda: backlog(ops_port) == (0, 0, 0), timeout=30)    # shipped, reported

        set_raw_max_message_bytes(kafka, 512)
        seen: list[tuple[float, ...]] = []
        for number in range(6):
            body, ids = batch_body(number)
            assert post(port, body)[0] == 200           # answered from the spool
            acked += ids
            # One record per batch on ctrail.raw (the EventList as received).
            wait_for(lambda n=number: backlog(ops_port)[0] == n + 1, timeout=15)
            seen.append(backlog(ops_port))
            if number == 2:
                time.sleep(1.5)                         # the oldest record's age must show it
        records, spooled_bytes, ages = zip(*seen)
        assert list(records) == [1, 2, 3, 4, 5, 6]
        assert all(b > a for a, b in zip(spooled_bytes, spooled_bytes[1:]))
        assert spooled_bytes[0] > len(batch_body(0)[0])  # the record and its envelope
        assert ages[-1] >= 1.5 and ages[-1] >= ages[0]
        status, body_text = readyz(ops_port)
        assert status == 200 and "intake spool: 6 records" in body_text, body_text
        assert set(stored_names(config, tmp_path)) & set(acked) == set()   # not shipped
    finally:
        kill_9(proc)                # a crash: what Kafka refused stays in the spool
    set_raw_max_message_bytes(kafka, MAX_MESSAGE_BYTES)
    proc = start(config, tmp_path / "data")
    try:
        wait_for(lambda: backlog(ops_port) == (0, 0, 0), timeout=90)
        wait_for(lambda: set(acked) <= set(stored_names(config, tmp_path)), timeout=60)
        assert readyz(ops_port) == (200, "ready\n")
    finally:
        stop(proc)
    names: Counter[str] = stored_names(config, tmp_path)
    assert [name for name in acked if names[name] != 1] == []              # each once


def test_a_collect_worker_reports_its_spools_backlog_too(tmp_path: Path) -> None:
    """`ctrail worker collect` runs its sources in its own process (no intake process)."""
    config, port, ops_port, kafka = write_config(tmp_path)

    def collect_worker() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("ctrail")), "worker", "collect", "--config",
             str(config), "--data-dir", str(tmp_path / "data")],
            env={**os.environ, "DISK_TOKEN": "disk-token"}, stderr=subprocess.PIPE, text=True)
    proc = collect_worker()
    try:
        wait_for(lambda: post(port, b'{"kind":"EventList","items":[]}')[0] == 200, timeout=60)
        wait_for(lambda: backlog(ops_port) == (0, 0, 0), timeout=30)
        set_raw_max_message_bytes(kafka, 512)
        for number in range(2):
            assert post(port, batch_body(number)[0])[0] == 200
        wait_for(lambda: backlog(ops_port)[0] == 2, timeout=15)
        time.sleep(1.0)                                 # nothing more, nothing shipped
        records, spooled_bytes, age = backlog(ops_port)
        assert records == 2 and spooled_bytes > len(batch_body(1)[0]) and age >= 1.0
    finally:
        kill_9(proc)
    set_raw_max_message_bytes(kafka, MAX_MESSAGE_BYTES)
    proc = collect_worker()
    try:
        wait_for(lambda: backlog(ops_port) == (0, 0, 0), timeout=90)
        shipped = list(kafka.read_topic(None, RAW, "backlog-test", timeout_secs=30))
        assert all(any(f"hook-{n:05d}-000".encode() in value for value in shipped)
                   for n in range(2))
    finally:
        stop(proc)
