"""The audit parser on real samples: every shape kube-apiserver and managed clusters emit."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.parsers.common import member_spans
from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.ecs import DATASET_K8S_AUDIT
from ctrail.errors import InvalidInput
from ctrail.event import Event, Rejection
from ctrail.identity import event_id

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
parser = K8sAuditParser()


def parse(line: bytes) -> list[Event]:
    parsed = parser.parse(RawRecord(line, "test:1", NOW))
    assert all(isinstance(e, Event) for e in parsed), parsed
    return parsed  # type: ignore[return-value]


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def test_a_plain_event_maps_to_ecs_and_keeps_its_original(real_data: Path) -> None:
    line = lines(real_data / "falco-k8saudit-traces/trace_files/exec_pod.json")[0]
    (event,) = parse(line)
    assert event.event.original == line.decode()
    assert event.timestamp == datetime(2018, 10, 26, 13, 38, 34, 867116, tzinfo=timezone.utc)
    assert event.event.action == "create"
    assert event.event.outcome == "success"
    assert event.user is not None and event.user.name == "minikube-user"
    assert event.source is not None and event.source.ip == "192.168.99.1"
    assert event.kubernetes is not None and event.kubernetes.namespace == "default"
    assert event.kubernetes.audit is not None
    assert event.kubernetes.audit["objectRef"]["subresource"] == "exec"


def test_the_id_is_deterministic_and_differs_per_record(real_data: Path) -> None:
    first, second = lines(real_data / "elastic-k8s-audit-pipeline-tests/test-audit.log")[:2]
    assert parse(first)[0].event.id == parse(first)[0].event.id
    assert parse(first)[0].event.id != parse(second)[0].event.id


def test_every_real_audit_sample_parses_except_the_known_malformed_one(real_data: Path) -> None:
    files = [*sorted((real_data / "falco-k8saudit-traces/trace_files").glob("*.json")),
             *sorted((real_data / "elastic-k8s-audit-pipeline-tests").glob("*.log")),
             real_data / "panther-k8s-rule-tests/raw_audit_events_from_tests.jsonl"]
    parsed, failed, total = 0, [], sum(len(lines(path)) for path in files)
    for path in files:
        for line in lines(path):
            try:
                parsed += len(parse(line))
            except InvalidInput as exc:
                failed.append((path.name, exc.reason.value))
    assert failed == [("fal_01_003.json", "schema_mismatch")]
    assert parsed == total - 1 > 200


def test_aks_envelopes_are_unwrapped_whether_the_log_is_an_object_or_a_string(real_data: Path) -> None:
    aks = [l for path in sorted((real_data / "elastic-k8s-audit-pipeline-tests").glob("*.log"))
           for l in lines(path) if b'"properties"' in l]
    assert len(aks) == 2
    for line in aks:
        (event,) = parse(line)
        assert event.event.original == line.decode()      # the whole envelope is the evidence
        assert event.user is not None and event.user.name
        assert event.kubernetes is not None and event.kubernetes.audit is not None
        assert event.kubernetes.audit["kind"] == "Event"


def test_a_gke_cloud_audit_entry_is_expressed_in_audit_fields(real_data: Path) -> None:
    (line,) = [l for l in lines(real_data / "elastic-k8s-audit-pipeline-tests/test-audit.log")
               if b"protoPayload" in l]
    (event,) = parse(line)
    assert event.user is not None and event.user.name == "system:gke-master-healthcheck"
    assert event.source is not None and event.source.ip == "67.43.156.1"
    assert event.event.action == "get"
    assert event.timestamp == datetime(2025, 7, 13, 8, 38, 39, 127266, tzinfo=timezone.utc)


def test_panther_style_timestamps_and_missing_ones(real_data: Path) -> None:
    events = [parse(line)[0] for line in
              lines(real_data / "panther-k8s-rule-tests/raw_audit_events_from_tests.jsonl")]
    spaced = [e for e in events if "requestReceivedTimestamp" in (e.kubernetes.audit or {})]
    assert spaced and all(e.timestamp.tzinfo is not None for e in spaced)
    undated = [e for e in events if "timestamp_from_ingest" in e.tags]
    assert undated and all(e.timestamp == NOW for e in undated)


def test_an_event_list_gives_one_event_per_item_with_its_exact_bytes(real_data: Path) -> None:
    items = lines(real_data / "falco-k8saudit-traces/trace_files/create_nginx_pod_privileged.json")
    items += lines(real_data / "falco-k8saudit-traces/trace_files/exec_pod.json")
    body = (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},\n  "items": [\n    '
            + b",\n    ".join(items) + b"\n  ]\n}")
    events = parse(body)
    assert [e.event.original.encode() for e in events] == items
    assert [e.event.id for e in events] == [parse(i)[0].event.id for i in items]


WEBHOOK_ITEM = (b'{"level":"Metadata","auditID":"a1","stage":"ResponseComplete","verb":"get",'
                b'"user":{"username":"alice"},"objectRef":{"resource":"secrets",'
                b'"namespace":"default","name":"x"},'
                b'"requestReceivedTimestamp":"2026-12-07T06:00:00Z",'
                b'"stageTimestamp":"2026-12-07T06:00:00Z"}')


def audit_of(event: Event) -> dict[str, Any]:
    assert event.kubernetes is not None and event.kubernetes.audit is not None
    return event.kubernetes.audit


def event_list(*items: bytes, api_version: bytes = b'"audit.k8s.io/v1"') -> bytes:
    """An EventList as kube-apiserver's webhook backend posts it: the items name no kind."""
    return (b'{"kind":"EventList","apiVersion":' + api_version + b',"metadata":{},"items":['
            + b",".join(items) + b"]}")


def test_webhook_items_without_kind_inherit_the_lists_kind_and_version() -> None:
    (event,) = parse(event_list(WEBHOOK_ITEM))
    assert event.event.original == WEBHOOK_ITEM.decode()          # the item as received
    assert event.event.id == event_id(DATASET_K8S_AUDIT, WEBHOOK_ITEM)  # of its own bytes
    assert event.timestamp == datetime(2026, 12, 7, 6, tzinfo=timezone.utc)
    assert event.event.action == "get" and event.event.type == ("access",)
    assert event.user is not None and event.user.name == "alice"
    assert event.kubernetes is not None and event.kubernetes.namespace == "default"
    audit = event.kubernetes.audit
    assert audit is not None
    assert (audit["kind"], audit["apiVersion"]) == ("Event", "audit.k8s.io/v1")
    assert audit["objectRef"] == {"resource": "secrets", "namespace": "default", "name": "x"}
    assert {k: v for k, v in audit.items() if k not in ("kind", "apiVersion")} \
        == orjson.loads(WEBHOOK_ITEM)


def test_the_item_id_hashes_the_items_own_bytes_only() -> None:
    """Same item bytes, same id, whatever batch carried it; other bytes, another id."""
    (alone,) = parse(event_list(WEBHOOK_ITEM))
    other = WEBHOOK_ITEM.replace(b'"a1"', b'"a2"')
    second = parse(event_list(other, WEBHOOK_ITEM, api_version=b'"audit.k8s.io/v1beta1"'))
    assert second[1].event.id == alone.event.id
    assert second[0].event.id != alone.event.id
    assert audit_of(second[1])["apiVersion"] == "audit.k8s.io/v1beta1"


def test_an_items_own_kind_and_version_are_kept_and_a_null_kind_is_inherited() -> None:
    own = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1",' + WEBHOOK_ITEM[1:]
    null = b'{"kind":null,' + WEBHOOK_ITEM[1:]
    first, second = parse(event_list(own, null))
    assert audit_of(first)["apiVersion"] == "audit.k8s.io/v1beta1"
    assert audit_of(second)["kind"] == "Event"
    assert [first.event.original, second.event.original] == [own.decode(), null.decode()]


@pytest.mark.parametrize(("bad", "detail"), [
    (b'{"kind":"Pod","metadata":{"name":"p"}}', "kind is 'Pod'"),
    (WEBHOOK_ITEM.replace(b'{"username":"alice"}', b'"notanobject"'), "user is not an object"),
    (WEBHOOK_ITEM.replace(b'"2026-12-07T06:00:00Z"', b'"yesterday"', 1), "not a timestamp"),
    (b'"a string"', "not an object"),
])
def test_a_bad_item_is_dead_lettered_alone(bad: bytes, detail: str) -> None:
    good = [WEBHOOK_ITEM, WEBHOOK_ITEM.replace(b'"a1"', b'"a3"')]
    parsed = parser.parse(RawRecord(event_list(good[0], bad, good[1]), "webhook req-7", NOW))
    events = [p for p in parsed if isinstance(p, Event)]
    (dead,) = [p for p in parsed if isinstance(p, Rejection)]
    assert [e.event.original.encode() for e in events] == good
    assert dead.original.encode() == bad and dead.original_encoding == "utf-8"
    assert dead.origin == "webhook req-7 items[1]"
    assert dead.stage == "collect" and dead.dataset == "kubernetes.audit"
    assert detail in dead.detail
    assert dead.reason in ("schema_mismatch", "invalid_timestamp")
    again = parser.parse(RawRecord(event_list(good[0], bad, good[1]), "webhook req-7", NOW))
    assert [p.id if isinstance(p, Rejection) else p.event.id for p in again] \
        == [p.id if isinstance(p, Rejection) else p.event.id for p in parsed]


def test_a_list_whose_every_item_is_bad_gives_only_dead_letters() -> None:
    parsed = parser.parse(RawRecord(event_list(b"1", b"[]"), "w", NOW))
    assert all(isinstance(p, Rejection) for p in parsed)
    assert [p.origin for p in parsed if isinstance(p, Rejection)] == ["w items[0]", "w items[1]"]
    assert parser.parse(RawRecord(event_list(), "w", NOW)) == []


def test_ids_of_audit_log_lines_are_unchanged(real_data: Path) -> None:
    """Regression: lines of an audit log keep the ids they had (a replay duplicates nothing)."""
    line = lines(real_data / "falco-k8saudit-traces/trace_files/exec_pod.json")[0]
    (event,) = parse(line)
    assert event.event.id == event_id(DATASET_K8S_AUDIT, line)
    assert event.event.id == "f29db016ab184cce92ef832ab3c8a26a"      # as before the fix


def test_item_spans_handle_strings_with_brackets_and_escapes() -> None:
    text = '{"metadata": {"x": "]},["}, "items": [{"a": "\\"]"}, [1, 2], "s"]}'
    spans = member_spans(text, "items")
    assert spans is not None
    assert [orjson.loads(text[a:b]) for a, b in spans] == [{"a": '"]'}, [1, 2], "s"]


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"kind":"Event","verb":"get"', "invalid_json"),
    (b"not json at all", "invalid_json"),
    (b'["an", "array"]', "schema_mismatch"),
    (b'{"kind": 0}', "schema_mismatch"),
    (b'{"kind":"Pod","metadata":{}}', "schema_mismatch"),
    (b'{"kind":"Event","user":"alice"}', "schema_mismatch"),
    (b'{"kind":"Event","requestReceivedTimestamp":"yesterday"}', "invalid_timestamp"),
    (b'{"kind":"Event","stageTimestamp":12}', "invalid_timestamp"),
    (b'{"kind":"Event","verb":"\xff\xfe"}', "invalid_encoding"),
    (b'{"kind":"EventList","items":{}}', "schema_mismatch"),
])
def test_malformed_records_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(line)


# ── fuzz: 10 000 mutated real audit records and made-up ones ──────────────────────────────────

from hypothesis import given  # noqa: E402

from ctrail.bus import DLQ  # noqa: E402
from ctrail.bus.codec import decode, encode  # noqa: E402
from parser_fuzz import FUZZ, SHARED_DATA, check, inputs  # noqa: E402

AUDIT_SAMPLES = [line for path in sorted((SHARED_DATA / "falco-k8saudit-traces/trace_files")
                                         .glob("*.json"))[:12]
                 for line in path.read_bytes().splitlines() if line.strip()]
AUDIT_KEYS = ["kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user",
              "username", "groups", "sourceIPs", "userAgent", "objectRef", "resource", "namespace",
              "name", "subresource", "responseStatus", "code", "requestObject", "responseObject",
              "requestReceivedTimestamp", "stageTimestamp", "annotations", "items", "properties",
              "log", "protoPayload", "timestamp"]


AUDIT_SAMPLES.append(event_list(*[orjson.dumps({k: v for k, v in orjson.loads(s).items()
                                                if k not in ("kind", "apiVersion")})
                                   for s in AUDIT_SAMPLES[:3]], WEBHOOK_ITEM))


class DeadLettersChecked:
    """The parser with its item dead letters checked and set aside (check() wants Events)."""

    dataset = K8sAuditParser.dataset

    def __init__(self) -> None:
        self.parser = K8sAuditParser()

    def parse(self, record: RawRecord) -> list[Event]:
        parsed = self.parser.parse(record)
        for dead in (p for p in parsed if isinstance(p, Rejection)):
            assert dead.origin.startswith(f"{record.origin} items[")
            assert dead.original in record.data.decode()
            assert decode(DLQ, encode(dead)) == dead
        return [p for p in parsed if isinstance(p, Event)]


@FUZZ
@given(inputs(AUDIT_SAMPLES or [b"{}"], AUDIT_KEYS))
def test_fuzz_only_invalid_input_escapes(data: bytes) -> None:
    check(DeadLettersChecked(), data)


def test_a_record_with_a_secret_gets_one_id_under_any_redaction_key() -> None:
    """Intake hashes secrets under its data directory's key; the id must not depend on it, or
    one record taken in by two collectors would be stored twice."""
    from collector.redact import Redactor

    line = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse",'
            b'"auditID":"s1","stage":"ResponseComplete","verb":"create",'
            b'"user":{"username":"a"},"objectRef":{"resource":"secrets","namespace":"d",'
            b'"name":"x"},"requestObject":{"kind":"Secret","data":{"p":"c2VjcmV0"}},'
            b'"requestReceivedTimestamp":"2026-12-07T06:00:00Z"}')
    ids, stored = set(), set()
    for key in (b"a" * 32, b"b" * 32):
        parser = K8sAuditParser(Redactor(key))
        scrubbed = parser.scrub(line)
        assert b"c2VjcmV0" not in scrubbed
        (event,) = parser.parse(RawRecord(scrubbed, "audit.log:1", datetime.now(timezone.utc)))
        ids.add(event.event.id)
        stored.add(event.event.original)
    assert len(ids) == 1 and len(stored) == 2
