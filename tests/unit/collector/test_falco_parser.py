"""The Falco alert parser on real alerts: syscall, k8s_audit and internal metrics events."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given

from collector import PARSERS
from collector.parsers.falco import FalcoParser
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event, Severity
from parser_fuzz import FUZZ, NOW, SHARED_DATA, check, inputs

parser = FalcoParser()


def parse(line: bytes) -> list[Event]:
    return parser.parse(RawRecord(line, "test:1", NOW))


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def alerts(real_data: Path) -> list[bytes]:
    return [line for path in sorted((real_data / "falco-alerts-json").glob("*.jsonl"))
            for line in lines(path)]


def test_it_is_registered_under_its_cli_name() -> None:
    assert PARSERS["falco"] is FalcoParser


def test_every_real_alert_parses_and_keeps_its_original(alerts: list[bytes]) -> None:
    events = [event for line in alerts for event in parse(line)]
    assert len(events) == len(alerts) == 27
    assert [e.event.original.encode() for e in events] == alerts
    internal = sum(orjson.loads(line).get("source") == "internal" for line in alerts)
    assert internal == 5
    assert sum(e.event.kind == "event" for e in events) == internal     # metrics are not alerts


def test_golden_terminal_shell_in_container(alerts: list[bytes]) -> None:
    line = next(l for l in alerts if b'"falco-xczjd"' in l)
    (event,) = parse(line)
    doc = event.model_dump(by_alias=True, exclude_none=True, exclude={"event": {"id", "original"}})
    assert doc.pop("falco") == orjson.loads(line)
    assert doc.pop("message").startswith("13:44:05.478445995: Critical A shell was spawned")
    assert doc == {
        "@timestamp": datetime(2023, 5, 25, 13, 44, 5, 478445, tzinfo=timezone.utc),
        "event": {"kind": "alert", "category": ("intrusion_detection",), "type": ("info",),
                  "action": "Terminal shell in container", "outcome": "unknown",
                  "dataset": "falco.alerts", "module": "falco", "ingested": NOW,
                  "severity": Severity.CRITICAL.value},
        "rule": {"name": "Terminal shell in container", "ruleset": "syscall"},
        "log": {"level": "critical"},
        "host": {"name": "falco-xczjd"},
        "user": {"name": "root"},
        "container": {"id": "ee97d9c4186f",
                      "image": {"name": "docker.io/library/alpine", "tag": ()}},
        "kubernetes": {"namespace": "default", "pod": {"name": "kubecon"}},
        "process": {"name": "sh", "command_line": "sh -c clear; (bash || ash || sh)",
                    "parent": {"name": "runc"}},
        "related": {"user": ("root",), "ip": (), "hash": (), "hosts": ()},
        "tags": (),
    }


def test_k8s_audit_alerts_name_the_user_and_the_pod(alerts: list[bytes]) -> None:
    line = next(l for l in alerts if b"pod=kubecon resource=pods ns=default action=exec" in l)
    (event,) = parse(line)
    assert event.user is not None and event.user.name == "kubernetes-admin"
    assert event.kubernetes is not None and event.kubernetes.namespace == "default"
    assert event.kubernetes.pod is not None and event.kubernetes.pod.name == "kubecon"
    assert event.event.severity == Severity.LOW and event.rule is not None


def test_na_values_and_missing_source_are_left_out(alerts: list[bytes]) -> None:
    line = next(l for l in alerts if b'"container.image.repository": null' in l)
    (event,) = parse(line)
    assert event.container is not None and event.container.image is None
    assert event.process is not None and event.process.parent is None      # proc.pname null
    assert event.rule is not None and event.rule.ruleset is None


def test_the_timestamp_falls_back_to_evt_time_and_host_is_not_a_container() -> None:
    (event,) = parse(b'{"rule":"r","output":"o","priority":"Error","output_fields":'
                     b'{"evt.time":1700000000000001000,"container.id":"host","proc.pid":7}}')
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=timezone.utc)
    assert event.container is None
    assert event.process is not None and event.process.pid == 7
    assert event.event.severity == Severity.HIGH


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"rule":"r","output":', "invalid_json"),
    (b'"just a string"', "schema_mismatch"),
    (b'{"output":"o","time":"2024-01-01T00:00:00Z"}', "schema_mismatch"),
    (b'{"rule":"r","output":3,"time":"2024-01-01T00:00:00Z"}', "schema_mismatch"),
    (b'{"rule":"r","output":"o","output_fields":[1],"time":"2024-01-01T00:00:00Z"}', "schema_mismatch"),
    (b'{"rule":"r","output":"o","output_fields":{"proc.cmdline":{"a":1}},"time":"2024-01-01T00:00:00Z"}',
     "schema_mismatch"),
    (b'{"rule":"r","output":"o","priority":"Warning"}', "invalid_timestamp"),
    (b'{"rule":"r","output":"o","time":"Tuesday"}', "invalid_timestamp"),
])
def test_malformed_alerts_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(line)


SAMPLES = [line for path in sorted((SHARED_DATA / "falco-alerts-json").glob("*.jsonl"))
           for line in lines(path)]
KEYS = ["rule", "output", "priority", "time", "source", "tags", "hostname", "output_fields",
        "container.id", "k8s.pod.name", "k8s.ns.name", "proc.cmdline", "proc.pid", "user.name",
        "evt.time", "ka.target.resource", "ka.target.name", "container.image.repository"]


@FUZZ
@given(inputs(SAMPLES or [b"{}"], KEYS))
def test_fuzz_only_invalid_input_escapes(data: bytes) -> None:
    check(parser, data)
