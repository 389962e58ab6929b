"""The Harbor webhook parser on the payloads Harbor documents, in both of its formats."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given

from collector import PARSERS
from collector.parsers.harbor import HarborParser
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event
from parser_fuzz import FUZZ, NOW, SHARED_DATA, check, inputs

parser = HarborParser()
DIGEST = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"


def parse(body: bytes) -> list[Event]:
    return parser.parse(RawRecord(body, "POST /harbor req-1", NOW))


@pytest.fixture(scope="module")
def payloads(real_data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((real_data / "harbor-webhooks").iterdir())
            if p.suffix in (".json", ".txt")}


def test_it_is_registered_under_its_cli_name() -> None:
    assert PARSERS["harbor"] is HarborParser


def test_every_valid_payload_parses_and_the_broken_ones_are_refused(payloads: dict[str, bytes]) -> None:
    valid = {name for name in payloads if name.endswith(".json")}
    assert len(valid) == 18
    for name, body in payloads.items():
        if name in valid:
            data = orjson.loads(body)
            resources = (data.get("event_data") or data.get("data") or {}).get("resources") or [{}]
            events = parse(body)
            assert len(events) == len(resources)
            assert all(e.event.original == body.decode() for e in events)
        else:
            with pytest.raises(InvalidInput, match="invalid_json"):
                parse(body)


def test_both_formats_of_one_event_map_alike(payloads: dict[str, bytes]) -> None:
    for name in [n for n in payloads if n.endswith(".default.json")]:
        other = name.replace(".default.", ".cloudevents.")
        if other not in payloads:
            continue
        (default,), (cloud,) = parse(payloads[name]), parse(payloads[other])
        assert default.event.action == cloud.event.action, name
        assert default.user == cloud.user, name
        assert default.registry is not None and cloud.registry is not None
        assert default.registry == cloud.registry.model_copy(update={"event_id": None}), name


def test_golden_push_by_digest(payloads: dict[str, bytes]) -> None:
    body = payloads["artifact_pushed.default.json"]
    (event,) = parse(body)
    assert event.model_dump(by_alias=True, exclude_none=True,
                            exclude={"event": {"id", "original"}}) == {
        "@timestamp": datetime(2023, 4, 3, 6, 4, 53, tzinfo=timezone.utc),
        "event": {"kind": "event", "category": ("web",), "type": ("creation",), "action": "push",
                  "outcome": "success", "dataset": "registry.harbor", "module": "registry",
                  "ingested": NOW},
        "registry": {"type": "harbor", "repository": "harbor/alpine", "namespace": "harbor",
                     "digest": DIGEST, "url": "localhost/harbor/alpine@" + DIGEST,
                     "host": "localhost"},
        "user": {"name": "harbor-jobservice"},
        "related": {"user": ("harbor-jobservice",), "ip": (), "hash": (DIGEST,), "hosts": ()},
        "tags": (),
    }


def test_golden_scan_summary(payloads: dict[str, bytes]) -> None:
    (event,) = parse(payloads["scanning_completed.cloudevents.json"])
    assert event.event.category == ("vulnerability",) and event.event.action == "scan_completed"
    assert event.registry is not None and event.registry.scan is not None
    assert event.registry.scan.model_dump(exclude_none=True) == {
        "status": "Success", "severity": "None", "report_id": "af0546c1-67dc-4e9d-927e-372900ead0df",
        "scanner": "Trivy v0.37.2", "total": 0, "fixable": 0}
    assert event.registry.event_id == "64bce2fe-6159-454d-8389-852d01ef1e9d"
    assert event.http is not None and event.http.request is not None
    assert event.http.request.id == "98ecbced-4169-443b-8e19-459a8c81675d"
    (failed,) = parse(payloads["scanning_failed.default.json"])
    assert failed.event.outcome == "failure"


def test_a_real_tag_is_kept_and_quota_details_become_the_message(payloads: dict[str, bytes]) -> None:
    (deleted,) = parse(payloads["artifact_deleted.default.json"])
    assert deleted.registry is not None and deleted.registry.tag == "3.8"
    (quota,) = parse(payloads["quota_exceeded.default.json"])
    assert quota.user is None                                             # operator ""
    assert quota.message is not None and quota.message.startswith("adding 2.1 MiB")
    (retention,) = parse(payloads["tag_retention_finished.default.json"])
    assert retention.registry is not None and retention.registry.details is not None
    assert retention.registry.details["retention"]["result"] == "SUCCESS"


def test_several_resources_give_several_events_with_distinct_ids(payloads: dict[str, bytes]) -> None:
    data = orjson.loads(payloads["artifact_deleted.default.json"])
    resource = data["event_data"]["resources"][0]
    data["event_data"]["resources"] = [resource, {**resource, "tag": "3.9"}]
    events = parse(orjson.dumps(data))
    assert [e.registry.tag for e in events if e.registry] == ["3.8", "3.9"]
    assert len({e.event.id for e in events}) == 2


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"type": "PUSH_ARTIFACT", ', "invalid_json"),
    (b'{"occur_at": 1}', "schema_mismatch"),
    (b'{"type": "PUSH_ARTIFACT", "occur_at": 1, "event_data": []}', "schema_mismatch"),
    (b'{"type": "PUSH_ARTIFACT", "occur_at": 1, "event_data": {"resources": [1]}}', "schema_mismatch"),
    (b'{"type": "PUSH_ARTIFACT", "occur_at": 1, "event_data": {"resources": [{"digest": 5}]}}',
     "schema_mismatch"),
    (b'{"type": "PUSH_ARTIFACT", "occur_at": "yesterday"}', "invalid_timestamp"),
    (b'{"specversion": "1.0", "type": "harbor.artifact.pushed"}', "invalid_timestamp"),
])
def test_malformed_payloads_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(body)


SAMPLES = [p.read_bytes() for p in sorted((SHARED_DATA / "harbor-webhooks").glob("*.json"))]
KEYS = ["type", "occur_at", "operator", "event_data", "data", "specversion", "id", "requestid",
        "time", "resources", "digest", "tag", "resource_url", "repository", "name", "namespace",
        "repo_full_name", "scan_overview", "summary", "scanner", "custom_attributes", "Details"]


@FUZZ
@given(inputs(SAMPLES or [b"{}"], KEYS))
def test_fuzz_only_invalid_input_escapes(data: bytes) -> None:
    check(parser, data)
