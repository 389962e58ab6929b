"""The query tree as Elasticsearch DSL: each node, and the choices that follow a field's type."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from ctrail.errors import QueryError
from ctrail.query import parse_query
from sinks.elasticsearch.search import MATCH_NONE, TEXT_FIELD, fields_of, index_of, to_dsl

TYPES = {
    "user.name": frozenset({"keyword"}),
    "user": frozenset({"object"}),
    "kubernetes.audit.responseStatus.code": frozenset({"long"}),
    "kubernetes.labels": frozenset({"flattened"}),
    "event.ingested": frozenset({"date_nanos"}),
    "mixed": frozenset({"keyword", "long"}),
}


def dsl(query: str) -> dict[str, Any]:
    return to_dsl(parse_query(query), TYPES)


@pytest.mark.parametrize(("query", "expected"), [
    ("*", {"match_all": {}}),
    ("user.name:alice", {"term": {"user.name": "alice"}}),
    ('user.name:"system:anonymous"', {"term": {"user.name": "system:anonymous"}}),
    ("kubernetes.audit.responseStatus.code:403",
     {"term": {"kubernetes.audit.responseStatus.code": 403}}),
    ("kubernetes.audit.responseStatus.code:forbidden", MATCH_NONE),
    ("kubernetes.labels.app:web", {"term": {"kubernetes.labels.app": "web"}}),
    ("no.such.field:x", MATCH_NONE),
    ("user.name:sys*", {"wildcard": {"user.name": {"value": "sys*"}}}),
    ("user.name:/al.ce/", {"regexp": {"user.name": {"value": "al.ce", "flags": "NONE"}}}),
    ("user.name:*", {"exists": {"field": "user.name"}}),
    ("_exists_:@timestamp", {"match_all": {}}),
    ("kubernetes.audit.responseStatus.code:[400 TO 499]",
     {"range": {"kubernetes.audit.responseStatus.code": {"gte": 400, "lte": 499}}}),
    ("kubernetes.audit.responseStatus.code:{200 TO 403}",
     {"range": {"kubernetes.audit.responseStatus.code": {"gt": 200, "lt": 403}}}),
    ("kubernetes.audit.responseStatus.code:[a TO z]", MATCH_NONE),   # text never meets numbers
    ("user.name:[a TO c]", {"range": {"user.name": {"gte": "a", "lte": "c"}}}),
    ("user.name:>=400", MATCH_NONE),                                 # numbers never meet text
    ("user.name:[* TO *]", {"exists": {"field": "user.name"}}),
    ("event.ingested:>=2026-03-01T00:00:00Z", {"range": {"event.ingested": {
        "gte": "2026-03-01T00:00:00Z", "format": "strict_date_optional_time_nanos"}}}),
    ("@timestamp:<2026-03-01T11:00:00Z", {"range": {"@timestamp": {
        "lt": "2026-03-01T11:00:00+00:00", "format": "strict_date_optional_time_nanos"}}}),
    ("checkout", {"match_phrase": {TEXT_FIELD: "checkout"}}),
    ('"kube-system"', {"match_phrase": {TEXT_FIELD: "kube-system"}}),
    ("Deploy*", {"prefix": {TEXT_FIELD: {"value": "deploy"}}}),
    ("kube-sys*", {"match_phrase_prefix": {TEXT_FIELD: {"query": "kube-sys",
                                                         "max_expansions": 1024}}}),
    ("user:bob", MATCH_NONE),                                        # an object has no value
])
def test_a_leaf_translates_to_the_query_for_its_field_type(query: str,
                                                            expected: dict[str, Any]) -> None:
    assert dsl(query) == expected


def test_boolean_logic_keeps_its_structure() -> None:
    assert dsl("user.name:a AND NOT user.name:b") == {"bool": {"filter": [
        {"term": {"user.name": "a"}},
        {"bool": {"must_not": [{"term": {"user.name": "b"}}]}}]}}
    assert dsl("user.name:a user.name:b") == {"bool": {
        "should": [{"term": {"user.name": "a"}}, {"term": {"user.name": "b"}}],
        "minimum_should_match": 1}}


def test_time_bounds_include_from_and_exclude_to() -> None:
    start, end = (datetime(2026, 3, d, tzinfo=timezone.utc) for d in (1, 2))
    assert to_dsl(parse_query("*"), {}, start, end) == {"bool": {"filter": [
        {"match_all": {}},
        {"range": {"@timestamp": {"format": "strict_date_optional_time_nanos",
                                  "gte": "2026-03-01T00:00:00+00:00",
                                  "lt": "2026-03-02T00:00:00+00:00"}}}]}}


@pytest.mark.parametrize(("query", "message"), [
    ("kubernetes.audit.responseStatus.code:4*", "needs a text field"),
    ("kubernetes.audit.responseStatus.code:/4.*/", "needs a text field"),
    ("mixed:x", "mapped as keyword and long"),
    ("user.name:/[/", "not a regular expression"),
])
def test_what_cannot_mean_the_same_as_in_the_embedded_store_is_refused(query: str,
                                                                       message: str) -> None:
    with pytest.raises(QueryError, match=message):
        dsl(query)


def test_the_fields_to_look_up_include_their_parents() -> None:
    assert fields_of(parse_query("kubernetes.labels.app:web OR NOT @timestamp:>now-1h")) == {
        "kubernetes", "kubernetes.labels", "kubernetes.labels.app"}


def test_event_searches_leave_out_the_alert_dead_letter_and_replay_verdict_streams() -> None:
    assert index_of("events", "prod") == ("logs-containertrail.*-prod,"
                                          "-logs-containertrail.alerts-prod*,"
                                          "-logs-containertrail.dlq-prod*,"
                                          "-logs-containertrail.dlq_replays-prod*")
    assert index_of("alerts", "prod") == "logs-containertrail.alerts-prod"
    assert index_of("dead_letters", "prod") == "logs-containertrail.dlq-prod"
    assert index_of("dead_letter_replays", "prod") == "logs-containertrail.dlq_replays-prod"
    with pytest.raises(ValueError, match="unknown kind"):
        index_of("users", "prod")
