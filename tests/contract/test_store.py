"""One suite for every store: the same query means the same documents on each.

The events are audit records written here the way kube-apiserver writes them, parsed and
enriched by the real parser and enricher, so the stored documents are what users store.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.errors import QueryError
from ctrail.event import DeadLetterReplay, Event, Rejection
from enrich import EnrichConfig
from sinks.elasticsearch import ElasticsearchConfig
from sinks.sqlite import SqliteConfig
from tests.services import elasticsearch_url, empty_elasticsearch_namespace


def audit(n: int, user: str, verb: str, resource: str, namespace: str | None, ips: list[str],
          code: int, when: str, name: str = "web-1") -> Event:
    record: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"00000000-0000-0000-0000-{n:012d}", "stage": "ResponseComplete",
        "requestURI": f"/api/v1/{resource}", "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ips, "userAgent": "kubectl/v1.31.0 (linux/amd64)",
        "objectRef": {"resource": resource, "name": name, "apiVersion": "v1",
                      **({"namespace": namespace} if namespace else {})},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": when, "stageTimestamp": when,
    }
    raw = orjson.dumps(record)
    (event,) = K8sAuditParser().parse(RawRecord(raw, f"audit.log:{n}", datetime.now(timezone.utc)))
    return EnrichConfig().build().enrich(event)


EVENTS = [
    audit(1, "alice", "get", "secrets", "payments", ["10.0.0.1"], 200, "2026-03-01T10:00:00Z"),
    audit(2, "alice", "delete", "pods", "payments", ["10.0.0.1"], 200, "2026-03-01T11:00:00Z"),
    audit(3, "bob", "list", "secrets", "kube-system", ["10.0.0.9", "10.0.0.2"], 403,
          "2026-03-02T09:00:00Z"),
    audit(4, "system:serviceaccount:ci:deployer", "create", "deployments", "payments",
          ["192.168.1.5"], 201, "2026-03-03T08:00:00Z", name="checkout"),
    audit(5, "system:anonymous", "get", "namespaces", None, ["203.0.113.7"], 401,
          "2026-03-04T12:00:00Z"),
]


def elasticsearch_config(**overrides: Any) -> ElasticsearchConfig:
    """Writes wait until searchable, so a search right after a write sees it."""
    values: dict[str, Any] = {"hosts": [elasticsearch_url()], "refresh_on_write": True,
                              "namespace": f"t{uuid.uuid4().hex[:12]}"}
    return ElasticsearchConfig(**(values | overrides))


# This server has no _data_stream API: a data stream, once created, cannot be deleted, nor its
# write index. So a test session writes to one namespace of its own and empties it after each
# test (roll every stream over, delete the older backing indices): every test starts empty, and
# a session leaves behind only its namespace's templates and closed, empty write indices.

@pytest.fixture(scope="session")
def es_namespace() -> Iterator[str]:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    yield namespace
    empty_elasticsearch_namespace(namespace, close=True)


# Both stores; Elasticsearch's runs with the integration tests.
STORE_KINDS = ["sqlite", pytest.param("elasticsearch", marks=pytest.mark.integration)]


@contextmanager
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The store request.param names (sqlite, or elasticsearch in the session's namespace),
    empty; closed after, and an Elasticsearch namespace emptied."""
    if request.param == "sqlite":
        config: Any = SqliteConfig()
    else:
        config = elasticsearch_config(namespace=request.getfixturevalue("es_namespace"))
    built = config.build(tmp_path)
    try:
        yield built
    finally:
        built.close()
        if isinstance(config, ElasticsearchConfig):
            empty_elasticsearch_namespace(config.namespace)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with empty_store(request, tmp_path) as built:
        built.write(EVENTS)
        yield built


def users(docs: list[dict[str, Any]]) -> list[str]:
    return [doc["user"]["name"] for doc in docs]


@pytest.mark.parametrize(("query", "expected"), [
    ("user.name:alice", ["alice", "alice"]),
    ('user.name:"system:anonymous"', ["system:anonymous"]),
    (r"user.name:system\:anonymous", ["system:anonymous"]),
    ("user.name:Alice", []),                                        # exact, as a keyword
    ("event.action:delete", ["alice"]),
    ("kubernetes.namespace:kube-system", ["bob"]),
    ("source.ip:10.0.0.9", ["bob"]),
    ("kubernetes.audit.sourceIPs:10.0.0.2", ["bob"]),               # any element of a list
    ("kubernetes.audit.responseStatus.code:403", ["bob"]),          # a number
    ("kubernetes.audit.responseStatus.code:[400 TO 499]", ["bob", "system:anonymous"]),
    ("kubernetes.audit.responseStatus.code:{200 TO 403}",
     ["system:serviceaccount:ci:deployer", "system:anonymous"]),
    ("kubernetes.audit.responseStatus.code:>=401", ["bob", "system:anonymous"]),
    ("user.name:system*", ["system:serviceaccount:ci:deployer", "system:anonymous"]),
    ("user.name:b?b", ["bob"]),
    ("user.name:/al.ce|bo+b/", ["alice", "alice", "bob"]),
    ("user.name:/lic/", []),                                        # regexps match whole values
    ("orchestrator.resource.type:secrets AND NOT user.name:bob", ["alice"]),
    ("user.name:bob OR event.action:delete", ["alice", "bob"]),
    ("user.name:bob event.action:delete", ["alice", "bob"]),        # side by side: OR
    ("+kubernetes.namespace:payments -user.name:alice", ["system:serviceaccount:ci:deployer"]),
    ("user.name:(bob OR alice) AND kubernetes.audit.verb:get", ["alice"]),
    ("kubernetes.namespace:*", ["alice", "alice", "bob", "system:serviceaccount:ci:deployer"]),
    ("NOT _exists_:kubernetes.namespace", ["system:anonymous"]),
    ("checkout", ["system:serviceaccount:ci:deployer"]),            # free text
    ('"kube-system"', ["bob"]),
    ("deploy*", ["system:serviceaccount:ci:deployer"]),
    ("@timestamp:[2026-03-02T00:00:00Z TO 2026-03-03T23:59:59Z]",
     ["bob", "system:serviceaccount:ci:deployer"]),
    ("@timestamp:<2026-03-01T11:00:00Z", ["alice"]),
    ("@timestamp:2026-03-04T12:00:00Z", ["system:anonymous"]),
    ("*", ["alice", "alice", "bob", "system:serviceaccount:ci:deployer", "system:anonymous"]),
])
def test_a_query_finds_exactly_its_events_oldest_first(store: Any, query: str,
                                                        expected: list[str]) -> None:
    assert users(store.search(query, "events", limit=100)) == expected
    assert store.count(query, "events") == len(expected)


def test_time_bounds_include_from_and_exclude_to(store: Any) -> None:
    found = store.search("*", "events", datetime(2026, 3, 1, 11, tzinfo=timezone.utc),
                         datetime(2026, 3, 3, 8, tzinfo=timezone.utc), 100)
    assert [doc["event"]["action"] for doc in found] == ["delete", "list"]


def test_a_limit_keeps_the_newest_and_prints_them_oldest_first(store: Any) -> None:
    assert users(store.search("*", "events", limit=2)) == [
        "system:serviceaccount:ci:deployer", "system:anonymous"]


def test_a_stream_gives_what_search_gives_in_its_order(store: Any) -> None:
    """`stream` (ctrail search --format json) pages forward from the oldest of the newest
    `limit`: the same documents as `search`, in the same order, across page edges and ties on
    @timestamp (three events per second here)."""
    many = [event.model_copy(update={
        "timestamp": datetime(2026, 3, 5, tzinfo=timezone.utc) + timedelta(seconds=i // 3),
        "event": event.event.model_copy(update={"id": f"stream-{i:05d}"})})
        for i, event in enumerate(EVENTS[i % len(EVENTS)] for i in range(1_300))]
    store.write(many)
    for query in ("*", "user.name:alice", "event.action:list OR user.name:bob"):
        for limit in (1, 2, 499, 500, 501, 1_000, 1_305, 5_000):
            streamed = list(store.stream(query, "events", limit=limit))
            assert streamed == store.search(query, "events", limit=limit), (query, limit)
    middle = (datetime(2026, 3, 5, 0, 1, tzinfo=timezone.utc),
              datetime(2026, 3, 5, 0, 3, tzinfo=timezone.utc))
    assert list(store.stream("*", "events", *middle, 100)) == store.search("*", "events",
                                                                          *middle, 100)
    assert list(store.stream("user.name:nobody", "events", limit=10)) == []


def test_documents_come_back_as_stored_with_the_original_bytes(store: Any) -> None:
    (doc,) = store.search('user.name:"system:anonymous"', "events", limit=10)
    assert doc == orjson.loads(EVENTS[4].model_dump_json(by_alias=True, exclude_none=True))
    assert orjson.loads(doc["event"]["original"])["auditID"].endswith("000000000005")


def test_writing_the_same_documents_again_stores_nothing_twice(store: Any) -> None:
    result = store.write(EVENTS)
    assert result.delivered == len(EVENTS) and not result.rejected
    assert store.count("*", "events") == len(EVENTS)


def test_dead_letters_are_a_kind_of_their_own(store: Any) -> None:
    dead = Rejection(id="r1", timestamp=datetime(2026, 3, 5, tzinfo=timezone.utc), stage="collect",
                     reason="invalid_json", detail="unexpected end of data at byte 12",
                     origin="audit.log:7", original='{"kind": "Ev')
    store.write([dead])
    assert store.count("*", "events") == len(EVENTS)
    (found,) = store.search("reason:invalid_json", "dead_letters", limit=10)
    assert (found["origin"], found["original"]) == ("audit.log:7", '{"kind": "Ev')
    assert store.search("reason:invalid_timestamp", "dead_letters", limit=10) == []


def test_replay_verdicts_are_a_kind_of_their_own_found_by_dead_letter(store: Any) -> None:
    from ctrail.runtime.resolution import verdicts_of

    dead = Rejection(id="r2", timestamp=datetime(2026, 3, 5, tzinfo=timezone.utc), stage="collect",
                     reason="invalid_json", detail="?", origin="audit.log:8", original="{")
    verdict = DeadLetterReplay(id="v1", timestamp=datetime(2026, 3, 6, tzinfo=timezone.utc),
                               dead_letter_id="r2", stage="collect", outcome="succeeded")
    assert store.write([dead, verdict]).delivered == 2
    assert store.write([verdict]).delivered == 1                      # stored once
    assert store.count("*", "dead_letter_replays") == 1
    assert store.count("*", "events") == len(EVENTS)
    assert [d["id"] for d in store.search("*", "dead_letters", limit=10)] == ["r2"]
    assert verdicts_of(store, ["r2", "r3"]) == {"r2": orjson.loads(
        verdict.model_dump_json(by_alias=True, exclude_none=True))}


@pytest.mark.parametrize("query", ["user.name:alice~1", "user.name:alice^2", '"a b"~3',
                                   "a && b", "user.name:[a TO b", "@timestamp:>yesterday",
                                   "user.name:/[/"])
def test_queries_we_cannot_answer_exactly_are_refused(store: Any, query: str) -> None:
    with pytest.raises(QueryError):
        store.search(query, "events", limit=10)
