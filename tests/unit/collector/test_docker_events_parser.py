"""The Docker Engine event parser on real samples: API JSON (old and new shapes) and CLI text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given

from collector import PARSERS
from collector.parsers.docker_event import DockerEventParser
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event
from parser_fuzz import FUZZ, NOW, SHARED_DATA, check, inputs

parser = DockerEventParser()


def parse(line: bytes) -> list[Event]:
    return parser.parse(RawRecord(line, "test:1", NOW))


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def samples(real_data: Path) -> dict[str, list[bytes]]:
    folder = real_data / "docker-events"
    return {path.name: lines(path) for path in sorted(folder.iterdir())
            if path.suffix in (".jsonl", ".txt")}


def test_it_is_registered_under_its_cli_name() -> None:
    assert PARSERS["docker-events"] is DockerEventParser


def test_every_real_event_parses_except_the_docs_malformed_zone(samples: dict[str, list[bytes]]) -> None:
    total = sum(len(v) for v in samples.values())
    malformed = [line for v in samples.values() for line in v if b"Z07:00" in line]
    parsed, failed = 0, []
    for file_lines in samples.values():
        for line in file_lines:
            try:
                parsed += len(parse(line))
            except InvalidInput as exc:
                failed.append((line, exc.reason.value))
    assert failed == [(line, "invalid_timestamp") for line in malformed]
    assert len(malformed) == 4
    assert parsed == total - 4 == 75


def test_golden_container_die_from_the_engine_api(samples: dict[str, list[bytes]]) -> None:
    line = samples["engine_api_v1_24_events_example.jsonl"][6]
    (event,) = parse(line)
    cid = "ede54ee1afda366ab42f824e8a5ffd195155d853ceaec74a927f249ea270c743"
    assert event.model_dump(by_alias=True, exclude_none=True, exclude={"event": {"id"}}) == {
        "@timestamp": datetime(2016, 4, 29, 15, 18, 25, 79144, tzinfo=timezone.utc),
        "event": {"kind": "event", "category": ("process",), "type": ("end",), "action": "die",
                  "outcome": "unknown", "dataset": "docker.events", "module": "docker",
                  "original": line.decode(), "ingested": NOW},
        "container": {"id": cid, "name": "my-container", "runtime": "docker",
                      "image": {"name": "alpine", "tag": ()}},
        "process": {"exit_code": 0},
        "docker": {"type": "container", "actor_id": cid,
                   "attributes": {"com.example.some-label": "some-label-value", "exitCode": "0",
                                  "image": "alpine", "name": "my-container"}},
        "tags": (),
    }


def test_the_legacy_shape_maps_like_the_current_one(samples: dict[str, list[bytes]]) -> None:
    old = [parse(line)[0] for line in samples["engine_api_v1_23_events_example.jsonl"]]
    new = [parse(line)[0] for line in samples["engine_api_v1_24_events_example.jsonl"]]
    skip = {"event": {"id", "original"}}
    assert [e.model_dump(exclude=skip) for e in old] == [e.model_dump(exclude=skip) for e in new]
    distinct_lines = set(samples["engine_api_v1_23_events_example.jsonl"]) | set(
        samples["engine_api_v1_24_events_example.jsonl"])
    assert len({e.event.id for e in old + new}) == len(distinct_lines) == 16   # network events are alike


def test_the_text_format_maps_like_the_json_it_was_printed_from(samples: dict[str, list[bytes]]) -> None:
    json_events = [parse(line)[0] for line in samples["docker_cli_golden_events.jsonl"]]
    text_events = [parse(line)[0] for line in samples["docker_cli_golden_events_default_format.txt"]]
    for a, b in zip(json_events, text_events, strict=True):
        assert (a.timestamp, a.event.action, a.container, b.docker and b.docker.attributes) == \
               (b.timestamp, b.event.action, b.container, a.docker and a.docker.attributes)
    assert [e.timestamp for e in json_events] == [datetime(1970, 1, 1, tzinfo=timezone.utc)
                                                  + timedelta(seconds=s) for s in (1, 2, 3, 4)]


def test_network_events_name_the_container_they_attach(samples: dict[str, list[bytes]]) -> None:
    (event,) = parse(samples["engine_api_v1_24_events_example.jsonl"][3])
    assert event.event.action == "connect" and event.event.category == ("network",)
    assert event.container is not None
    assert event.container.id == "ede54ee1afda366ab42f824e8a5ffd195155d853ceaec74a927f249ea270c743"
    assert event.docker is not None and event.docker.actor_id.startswith("7dc8ac97")


def test_kubelet_labels_become_kubernetes_fields_and_exec_commands_a_command_line() -> None:
    line = (b'{"Type":"container","Action":"exec_start: /bin/sh -c id","Actor":{"ID":"c1",'
            b'"Attributes":{"image":"reg.example:5000/team/app:1.2@sha256:ab","name":"k8s_app_web",'
            b'"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"prod",'
            b'"io.kubernetes.pod.uid":"0f6e","io.kubernetes.container.name":"app"}},'
            b'"scope":"local","time":1700000000,"timeNano":1700000000123456789}')
    (event,) = parse(line)
    assert event.event.action == "exec_start"
    assert event.process is not None and event.process.command_line == "/bin/sh -c id"
    assert event.kubernetes is not None and event.kubernetes.namespace == "prod"
    assert event.kubernetes.pod is not None and event.kubernetes.pod.name == "web-0"
    assert event.kubernetes.pod.uid == "0f6e"
    assert event.kubernetes.container is not None and event.kubernetes.container.name == "app"
    assert event.container is not None and event.container.image is not None
    assert event.container.image.name == "reg.example:5000/team/app"
    assert event.container.image.tag == ("1.2",)
    assert event.related is not None and event.related.hash == ("sha256:ab",)
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"Type":"container"', "invalid_json"),
    (b'["container"]', "schema_mismatch"),
    (b'{"Type":"container","time":1}', "schema_mismatch"),
    (b'{"Action":"start","Actor":{"ID":"x","Attributes":{"exitCode":0}},"time":1}', "schema_mismatch"),
    (b'{"Action":"start","Actor":"x","time":1}', "schema_mismatch"),
    (b'{"Action":"start"}', "invalid_timestamp"),
    (b'{"Action":"start","timeNano":"now"}', "invalid_timestamp"),
    (b'{"Action":"start","time":99999999999999999}', "invalid_timestamp"),
    (b"container started, probably", "schema_mismatch"),
    (b"\xff\xfe", "invalid_encoding"),
])
def test_malformed_records_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(line)


SAMPLES = [line for pattern in ("*.jsonl", "*.txt")
           for path in sorted((SHARED_DATA / "docker-events").glob(pattern)) for line in lines(path)]
KEYS = ["Type", "Action", "Actor", "ID", "Attributes", "scope", "time", "timeNano", "status",
        "id", "from", "image", "name", "exitCode", "io.kubernetes.pod.name"]


@FUZZ
@given(inputs(SAMPLES or [b"{}"], KEYS))
def test_fuzz_only_invalid_input_escapes(data: bytes) -> None:
    check(parser, data)
