"""Bulk item results, as captured from Elasticsearch 8.19, and what each means for a document."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from ctrail.event import Rejection
from sinks.elasticsearch.documents import dataset_name, document, stream_of
from sinks.elasticsearch.outcome import Outcome, classify, rejected

CREATED = {"status": 201}
ALREADY_STORED = {"status": 409, "error": {
    "type": "version_conflict_engine_exception",
    "reason": "[a]: version conflict, document already exists (current version [1])"}}
MAPPING_ERROR = {"status": 400, "error": {
    "type": "document_parsing_exception",
    "reason": "[1:92] failed to parse field [kubernetes.audit.responseStatus.code] of type [long] "
              "in document with id 'b'. Preview of field's value: '{x=1}'",
    "caused_by": {"type": "illegal_argument_exception", "reason": "Cannot parse object as number"}}}
DISK_FULL = {"status": 429, "error": {
    "type": "cluster_block_exception",
    "reason": "index [.ds-logs-containertrail.kubernetes.audit-t-2026.11.25-000001] blocked by: "
              "[TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has "
              "read-only-allow-delete block]"}}
UNAVAILABLE = {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "..."}}


@pytest.mark.parametrize(("result", "outcome"), [
    (CREATED, Outcome.DELIVERED), (ALREADY_STORED, Outcome.DELIVERED),
    (MAPPING_ERROR, Outcome.REJECTED), (DISK_FULL, Outcome.RETRY), (UNAVAILABLE, Outcome.RETRY),
])
def test_each_bulk_item_result_is_classified(result: dict[str, Any], outcome: Outcome) -> None:
    assert classify(result) is outcome


def test_a_rejected_document_becomes_a_dead_letter_with_the_error_and_the_document() -> None:
    item = Rejection(id="r1", timestamp=datetime(2026, 3, 5, tzinfo=timezone.utc), stage="collect",
                     reason="invalid_json", detail="x", dataset="kubernetes.audit",
                     origin="audit.log:7", original="{")
    doc = document(item, "prod")
    dead = rejected(doc, MAPPING_ERROR)
    assert (dead.stage, dead.reason, dead.dataset) == ("store", "rejected_by_store",
                                                       "kubernetes.audit")
    assert dead.detail.startswith("document_parsing_exception: [1:92] failed to parse field")
    assert dead.detail.endswith("(caused by illegal_argument_exception: "
                                "Cannot parse object as number)")
    assert dead.original == doc.source.decode()
    assert dead.origin == "elasticsearch logs-containertrail.dlq-prod r1"
    assert rejected(doc, MAPPING_ERROR).id == dead.id                 # a replay: the same id
    assert stream_of(item, "prod") == "logs-containertrail.dlq-prod"


@pytest.mark.parametrize(("dataset", "name"), [
    ("kubernetes.audit", "kubernetes.audit"), ("Docker-Events", "docker_events"),
    ("alerts", "alerts_events"), ("dlq", "dlq_events"), ("dlq_replays", "dlq_replays_events"),
    ("", "unknown")])
def test_an_event_dataset_becomes_a_valid_stream_dataset_never_a_reserved_one(
        dataset: str, name: str) -> None:
    assert dataset_name(dataset) == name
