"""The Fluentd output: what fluent-logger sends, received by a real forward listener (our own
input), retried when the receiver is down, and the `forward` stage built only when configured."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from collector.parsers.cri_log import ContainerLogParser
from collector.sources.fluent_forward import FluentForwardConfig, ForwardSource
from ctrail.bus.codec import encode
from ctrail.components import RawRecord
from ctrail.errors import Retryable, Unavailable
from ctrail.event import Alert, Event
from ctrail.runtime.pipeline import Pipeline
from ctrail.settings import Settings
from sinks.fluentd import FluentdConfig, FluentdSink, fluent_entry

CID = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16"
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def an_event(n: int = 1) -> Event:
    line = f"2026-05-01T12:00:00.123456789Z stdout F request {n}".encode()
    record = RawRecord(line, f"/var/log/containers/web_shop_nginx-{CID}.log", NOW)
    return ContainerLogParser().parse(record)[0]


def an_alert() -> Alert:
    return Alert.model_validate({
        "@timestamp": NOW, "rule": {"id": "CT-K8S-004", "name": "Exec into a pod"},
        "event": {"id": "a1", "kind": "alert", "action": "exec", "dataset": "ctrail.alerts",
                  "module": "ctrail", "original": "{}", "ingested": NOW},
        "alert": {"severity": "high", "group_key": "g1", "event_ids": ["e1"]}})


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ForwardSource]:
    # Our own forward input as the Fluentd stand-in: it reads the records exactly as sent.
    source = FluentForwardConfig(port=0, parser="falco", allow_unauthenticated=True).build(
        "receiver", tmp_path, 1024 * 1024)
    yield source
    source.close()


def received(source: ForwardSource, want: int, timeout: float = 10.0) -> list[RawRecord]:
    got: list[RawRecord] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        records = source.read(100)
        source.commit(records)
        got += records
    return got


def test_an_entry_is_the_stored_ecs_document_with_its_timestamp_in_nanoseconds() -> None:
    event = an_event()
    label, when, record = fluent_entry(event)
    assert label == "events"
    assert struct.unpack(">II", when.data) == (int(NOW.timestamp()), 123456000)
    assert record == orjson.loads(encode(event))
    assert record["event"]["id"] == event.event.id
    assert fluent_entry(an_alert())[0] == "alerts"


def test_the_sink_delivers_events_and_alerts_to_a_forward_receiver(receiver) -> None:
    sink = FluentdConfig(port=receiver.port, tag_prefix="ct").build()
    sink.check()
    events, alert = [an_event(n) for n in range(5)], an_alert()
    assert sink.write([*events, alert]).delivered == 6
    sink.close()
    got = received(receiver, 6)
    assert [r.origin for r in got] == ["fluent_forward receiver tag=ct.events"] * 5 + [
        "fluent_forward receiver tag=ct.alerts"]
    assert [orjson.loads(r.data) for r in got] == [orjson.loads(encode(i))
                                                  for i in [*events, alert]]


def test_a_receiver_that_is_down_makes_the_batch_retryable_and_sends_it_once_later(
        tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = FluentdSink(FluentdConfig(port=port, timeout_secs=0.5))
    with pytest.raises(Unavailable, match=f"fluentd 127.0.0.1:{port}"):
        sink.check()
    with pytest.raises(Retryable, match="fluentd"):
        sink.write([an_event(1)])
    receiver = FluentForwardConfig(port=port, parser="falco", allow_unauthenticated=True).build(
        "receiver", tmp_path, 1024 * 1024)
    try:
        assert sink.write([an_event(1)]).delivered == 1          # the runner's retry
        sink.close()
        got = received(receiver, 2, timeout=1.5)
        assert len(got) == 1, "fluent-logger's own buffer must not send the failed one again"
    finally:
        receiver.close()


def test_the_forward_stage_is_built_only_when_outputs_are_configured(tmp_path: Path,
                                                                     receiver) -> None:
    plain = Pipeline(Settings(data_dir=tmp_path / "a"))
    with_output = Pipeline(Settings(data_dir=tmp_path / "b",
                                    outputs={"siem": {"type": "fluentd", "port": receiver.port}}))
    try:
        assert "forward" not in [w.name for w in plain.workers]
        assert "forward" in [w.name for w in with_output.workers]
    finally:
        plain.close()
        with_output.close()
