"""The Docker Distribution notification parser on the envelopes the registry documents and tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given

from collector import PARSERS
from collector.parsers.distribution import DistributionParser
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event
from parser_fuzz import FUZZ, NOW, SHARED_DATA, check, inputs

parser = DistributionParser()


def parse(body: bytes) -> list[Event]:
    return parser.parse(RawRecord(body, "POST /registry req-1", NOW))


@pytest.fixture(scope="module")
def envelopes(real_data: Path) -> dict[str, bytes]:
    folder = real_data / "distribution-notifications"
    bodies = {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))
              if b'"events"' in p.read_bytes()}
    request = (folder / "docs_push_http_request.txt").read_bytes()
    bodies["docs_push_http_request.txt"] = request.split(b"\n\n", 1)[1]       # the POST body
    return bodies


def test_it_is_registered_under_its_cli_name() -> None:
    assert PARSERS["registry"] is DistributionParser


def test_every_envelope_gives_one_event_per_event(envelopes: dict[str, bytes]) -> None:
    assert len(envelopes) == 4
    for body in envelopes.values():
        events = parse(body)
        assert len(events) == len(orjson.loads(body)["events"])
        assert len({e.event.id for e in events}) == len(events)
        assert [orjson.loads(e.event.original) for e in events] == orjson.loads(body)["events"]
        assert all(e.event.original in body.decode() for e in events)     # exact bytes


def test_golden_manifest_pull(envelopes: dict[str, bytes]) -> None:
    (event,) = parse(envelopes["docs_pull_manifest_envelope.json"])
    digest = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
    assert event.model_dump(by_alias=True, exclude_none=True,
                            exclude={"event": {"id", "original"}}) == {
        "@timestamp": datetime(2016, 3, 9, 14, 44, 26, 402973, tzinfo=timezone(timedelta(hours=-8))),
        "event": {"kind": "event", "category": ("web",), "type": ("access",), "action": "pull",
                  "outcome": "success", "dataset": "registry.distribution", "module": "registry",
                  "ingested": NOW},
        "registry": {"type": "distribution", "event_id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
                     "repository": "hello-world", "digest": digest, "tag": "latest",
                     "media_type": "application/vnd.docker.distribution.manifest.v2+json",
                     "size": 708, "host": "192.168.100.227:5000", "instance": "xtal.local:5000",
                     "url": "http://192.168.100.227:5000/v2/hello-world/manifests/" + digest},
        "source": {"ip": "192.168.64.11", "address": "192.168.64.11"},
        "user_agent": {"original": "curl/7.38.0"},
        "http": {"request": {"id": "6df24a34-0959-4923-81ca-14f09767db19", "method": "GET"}},
        "related": {"user": (), "ip": ("192.168.64.11",), "hash": (digest,), "hosts": ()},
        "tags": (),
    }


def test_a_push_names_the_actor_and_keeps_a_hostname_as_an_address(envelopes: dict[str, bytes]) -> None:
    first, *layers = parse(envelopes["docs_push_envelope_3events.json"])
    assert first.user is not None and first.user.name == "test-actor"
    assert first.source is not None and first.source.ip is None
    assert first.source.address == "client.local"
    assert first.event.type == ("creation",) and first.registry is not None
    assert [e.registry.size for e in layers if e.registry] == [2, 3]       # from length


def test_the_http_request_body_is_the_same_envelope(envelopes: dict[str, bytes]) -> None:
    documented = parse(envelopes["docs_push_http_request.txt"])
    assert [e.registry for e in documented] == [
        e.registry for e in parse(envelopes["docs_push_envelope_3events.json"])]


def test_ids_hash_each_event_so_a_rebatched_retry_is_stored_once(envelopes: dict[str, bytes]) -> None:
    events = parse(envelopes["golden_push_envelope_event_test.json"])
    rebatched = b'{"events": [' + events[2].event.original.encode() + b"]}"
    assert parse(rebatched)[0].event.id == events[2].event.id


def test_delete_fragment_and_empty_envelope() -> None:
    body = b'{"events":[{"action":"delete","timestamp":"2024-01-01T00:00:00Z","target":{"repository":"library/test","tag":"old"}}]}'
    (event,) = parse(body)
    assert event.event.type == ("deletion",)
    assert event.registry is not None and event.registry.tag == "old" and event.registry.digest is None
    assert parse(b'{"events": []}') == []


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"events": [', "invalid_json"),
    (b'[{"action":"push"}]', "schema_mismatch"),
    (b'{"events": {}}', "schema_mismatch"),
    (b'{"events": [1]}', "schema_mismatch"),
    (b'{"events": [{"timestamp":"2024-01-01T00:00:00Z"}]}', "schema_mismatch"),
    (b'{"events": [{"action":"push","target":"x"}]}', "schema_mismatch"),
    (b'{"events": [{"action":"push","target":{"size":"big"}}]}', "schema_mismatch"),
    (b'{"events": [{"action":"push","timestamp":"soon"}]}', "invalid_timestamp"),
    (b'{"events": [], "events": [{"action":"push"}]}', "schema_mismatch"),
])
def test_malformed_envelopes_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(body)


SAMPLES = [p.read_bytes() for p in sorted((SHARED_DATA / "distribution-notifications").glob("*.json"))]
KEYS = ["events", "id", "timestamp", "action", "target", "mediaType", "digest", "size", "length",
        "repository", "url", "tag", "request", "addr", "host", "method", "useragent", "actor",
        "name", "source", "instanceID", "fromRepository"]


@FUZZ
@given(inputs(SAMPLES or [b"{}"], KEYS))
def test_fuzz_only_invalid_input_escapes(data: bytes) -> None:
    for event in check(parser, data):
        assert event.event.original in data.decode()
