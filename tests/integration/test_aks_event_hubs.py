"""AKS audit logs from an Event Hub's Kafka endpoint (source `kafka`), against the real Kafka of
scripts/services on its SASL_SSL listener, which takes PLAIN as Event Hubs does (user
`$ConnectionString`, the connection string as the password): Azure Monitor's `{"records": [...]}`
messages become one record each, offsets survive a restart without loss or duplicates, a batch
not committed comes again, a bad message is dead-lettered, and `ctrail run` stores the events."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from collector.sources.kafka_topic import (
    KafkaTopicConfig,
    KafkaTopicSource,
    connection_string_parts,
)
from ctrail.bus.kafka import KafkaProducer  # kafka-python, imported without its warnings
from ctrail.components import RawRecord
from ctrail.errors import ConfigError, Unavailable
from tests.ctrail_process import ctrail_running, json_lines
from tests.services import kafka_sasl
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
AKS_SAMPLE = "elastic-k8s-audit-pipeline-tests/test-kube-audit.log"


@pytest.fixture(scope="module")
def endpoint() -> tuple[str, Path, str]:
    servers, ca, connection_string = kafka_sasl()
    if not ca.is_file():
        pytest.skip(f"no SASL_SSL Kafka here ({ca} missing): run scripts/services up")
    return servers, ca, connection_string


@pytest.fixture
def hub(endpoint: tuple[str, Path, str], monkeypatch: pytest.MonkeyPatch,
        ) -> Iterator[tuple[str, KafkaProducer]]:
    """A fresh topic (the Event Hub) and a producer that signs in as Azure Monitor would."""
    servers, ca, connection_string = endpoint
    monkeypatch.setenv("TEST_EVENT_HUBS", connection_string)
    producer = KafkaProducer(bootstrap_servers=servers, security_protocol="SASL_SSL",
                             sasl_mechanism="PLAIN", sasl_plain_username="$ConnectionString",
                             sasl_plain_password=connection_string, ssl_cafile=str(ca))
    yield f"aks-audit-{uuid.uuid4().hex[:10]}", producer
    producer.close()


def aks_record(template: dict[str, Any], audit_id: str, user: str = "aks-admin") -> dict[str, Any]:
    """The real AKS diagnostic record with another auditID and user."""
    event = json.loads(template["properties"]["log"])
    event.update(auditID=audit_id, user={"username": user, "groups": ["system:authenticated"]})
    return {**template, "properties": {**template["properties"], "log": json.dumps(event)}}


@pytest.fixture(scope="module")
def template(real_data: Path) -> dict[str, Any]:
    return json.loads((real_data / AKS_SAMPLE).read_text().splitlines()[0])  # type: ignore[no-any-return]


def send(producer: KafkaProducer, topic: str, messages: list[bytes]) -> None:
    for message in messages:
        producer.send(topic, message)
    producer.flush(timeout=30)


def azure_message(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"records": records}).encode()


def source(topic: str, endpoint: tuple[str, Path, str], group: str) -> KafkaTopicSource:
    servers, ca, _ = endpoint
    return KafkaTopicConfig.model_validate({
        "event_hubs_connection_string": {"env": "TEST_EVENT_HUBS"},
        "bootstrap_servers": servers, "ca_file": str(ca), "topic": topic, "group_id": group,
        "poll_timeout_secs": 0.5}).build("aks", Path("."), 1024 * 1024)


def drain(src: KafkaTopicSource, until: str, timeout_secs: float = 60) -> list[RawRecord]:
    """Read and commit until the record of auditID `until` came (joining the group takes a
    few polls), then as long as more comes."""
    records: list[RawRecord] = []
    deadline = time.monotonic() + timeout_secs
    while until not in audit_ids(records):
        assert time.monotonic() < deadline, f"{until} never came"
        batch = src.read(500)
        src.commit(batch)
        records.extend(batch)
    while batch := src.read(500):
        src.commit(batch)
        records.extend(batch)
    return records


def audit_ids(records: list[RawRecord]) -> list[str]:
    return [json.loads(json.loads(r.data)["properties"]["log"])["auditID"] for r in records]


def test_records_are_split_committed_and_resumed_without_loss_or_duplicates(
        hub: tuple[str, KafkaProducer], endpoint: tuple[str, Path, str],
        template: dict[str, Any]) -> None:
    topic, producer = hub
    send(producer, topic, [azure_message([aks_record(template, f"m{m}-r{r}") for r in range(3)])
                           for m in range(40)])
    group = f"ctrail-{uuid.uuid4().hex[:8]}"
    first = source(topic, endpoint, group)
    records = drain(first, until="m39-r2")
    assert sorted(audit_ids(records)) == sorted(f"m{m}-r{r}" for m in range(40) for r in range(3))
    assert records[0].origin == f"kafka {topic}/0@0#0"
    first.close()

    send(producer, topic, [azure_message([aks_record(template, "late-1")]),
                           azure_message([aks_record(template, "late-2")])])
    restarted = source(topic, endpoint, group)
    assert audit_ids(drain(restarted, until="late-2")) == ["late-1", "late-2"]
    restarted.close()
    send(producer, topic, [azure_message([aks_record(template, "late-3")])])
    again = source(topic, endpoint, group)
    assert audit_ids(drain(again, until="late-3")) == ["late-3"]      # nothing twice
    again.close()


def test_a_batch_not_committed_comes_again(hub: tuple[str, KafkaProducer],
                                           endpoint: tuple[str, Path, str],
                                           template: dict[str, Any]) -> None:
    topic, producer = hub
    send(producer, topic, [azure_message([aks_record(template, f"u{i}")]) for i in range(5)])
    src = source(topic, endpoint, f"ctrail-{uuid.uuid4().hex[:8]}")
    batch: list[RawRecord] = []
    while not batch:
        batch = src.read(500)
    again: list[RawRecord] = []
    while len(again) < len(batch):
        again += src.read(500)
    assert audit_ids(again) == audit_ids(batch)
    src.close()


def test_a_wrong_key_is_refused_and_never_shown(endpoint: tuple[str, Path, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    servers, ca, connection_string = endpoint
    wrong = connection_string.replace("SharedAccessKey=", "SharedAccessKey=WRONG")
    monkeypatch.setenv("TEST_EVENT_HUBS", wrong)
    config = KafkaTopicConfig.model_validate({
        "event_hubs_connection_string": {"env": "TEST_EVENT_HUBS"}, "bootstrap_servers": servers,
        "ca_file": str(ca), "topic": "anything", "connect_timeout_secs": 5})
    with pytest.raises(Unavailable) as raised:
        src = config.build("aks", Path("."), 1024)
        src.read(10)
    assert "WRONG" not in str(raised.value)


def test_the_connection_string_gives_the_brokers_and_the_hub() -> None:
    assert connection_string_parts(
        "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=Send;"
        "SharedAccessKey=abc=;EntityPath=aks-audit") == {
            "host": "contoso.servicebus.windows.net", "entity": "aks-audit"}
    with pytest.raises(ConfigError, match="not an Event Hubs connection string") as raised:
        connection_string_parts("Endpoint=https://x/;SharedAccessKey=secret-value")
    assert "secret-value" not in str(raised.value)


def test_ctrail_run_stores_aks_events_and_dead_letters_a_bad_message(
        hub: tuple[str, KafkaProducer], endpoint: tuple[str, Path, str],
        template: dict[str, Any], tmp_path: Path) -> None:
    topic, producer = hub
    servers, ca, _ = endpoint
    send(producer, topic, [azure_message([aks_record(template, f"run-{i}", "aks-run-user")
                                          for i in range(10)]), b"this is not json"])
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  aks-prod:
    type: kafka
    event_hubs_connection_string: {{env: TEST_EVENT_HUBS}}
    bootstrap_servers: {servers}
    ca_file: {ca}
    topic: {topic}
""")
    data_dir = tmp_path / "data"
    with ctrail_running(config, data_dir):
        wait_for(lambda: json_lines(config, data_dir, "search", "user.name:aks-run-user") == 10,
                 timeout=90)
        wait_for(lambda: json_lines(config, data_dir, "dlq", "list") == 1, timeout=30)
