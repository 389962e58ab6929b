"""The Elasticsearch store against the real server: templates and stream names, replays that
store nothing twice (also across a rollover), mapping errors dead-lettered one by one, and a
refused (429) document kept for a retry, and a search that waits for a starting shard."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from elastic_transport import ConnectionTimeout
from elasticsearch import Elasticsearch

from ctrail.bus.codec import encode
from ctrail.errors import Reason, Unavailable
from ctrail.event import Alert, AlertInfo, Rejection, Rule
from sinks.elasticsearch import ElasticsearchConfig, templates
from sinks.elasticsearch.outcome import Outcome, classify
from sinks.elasticsearch.store import ElasticsearchStore
from tests.contract.test_store import (
    EVENTS,
    elasticsearch_config,
    es_namespace,  # noqa: F401  (the session's namespace)
)
from tests.services import elasticsearch_url, empty_elasticsearch_namespace

pytestmark = pytest.mark.integration

AUDIT_STREAM = "logs-containertrail.kubernetes.audit-{ns}"


@pytest.fixture
def store(es_namespace: str, tmp_path: Path) -> Iterator[ElasticsearchStore]:
    built = elasticsearch_config(namespace=es_namespace).build(tmp_path)
    yield built
    built.close()
    empty_elasticsearch_namespace(es_namespace)


@pytest.fixture
def unused_config(client: Elasticsearch) -> Iterator[ElasticsearchConfig]:
    """A namespace no document is written to, so its templates can be removed afterwards."""
    config = elasticsearch_config()
    yield config
    for name in templates.index_templates(config.namespace, ilm=False):
        client.options(ignore_status=404).indices.delete_index_template(name=name)
    for name in templates.component_templates(config.namespace):
        client.cluster.delete_component_template(name=name)


@pytest.fixture
def client() -> Iterator[Elasticsearch]:
    with Elasticsearch(elasticsearch_url()) as es:
        yield es


def an_alert() -> Alert:
    event = EVENTS[2]
    return Alert(timestamp=event.timestamp,
                 event=event.event.model_copy(update={"id": "alert-1", "kind": "alert"}),
                 rule=Rule(id="ct-001", name="Secrets listed by a stranger"),
                 alert=AlertInfo(severity="high", group_key="bob", event_ids=(event.event.id,)))


def a_dead_letter() -> Rejection:
    return Rejection(id="dead-1", timestamp=EVENTS[0].timestamp, stage="collect",
                     reason="invalid_json", detail="unexpected end of data", origin="audit.log:9",
                     original='{"kind": "Ev')


def streams(client: Elasticsearch, namespace: str) -> set[str]:
    found = client.indices.resolve_index(name=f"logs-containertrail.*-{namespace}")
    return {stream["name"] for stream in found["data_streams"]}


def test_templates_are_installed_and_each_data_class_has_its_stream(
        store: ElasticsearchStore, client: Elasticsearch) -> None:
    ns = store.namespace
    store.check()
    assert store.write([*EVENTS, an_alert(), a_dead_letter()]).delivered == len(EVENTS) + 2
    assert streams(client, ns) == {AUDIT_STREAM.format(ns=ns), f"logs-containertrail.alerts-{ns}",
                                   f"logs-containertrail.dlq-{ns}"}
    assert [store.count("*", kind) for kind in ("events", "alerts", "dead_letters")] == [5, 1, 1]
    mapping = next(iter(client.indices.get_mapping(index=AUDIT_STREAM.format(ns=ns)).values()))
    fields = mapping["mappings"]["properties"]
    audit = fields["kubernetes"]["properties"]["audit"]["properties"]
    assert fields["@timestamp"]["type"] == "date_nanos"
    assert fields["event"]["properties"]["original"] == {
        "type": "keyword", "index": False, "doc_values": False}
    assert audit["responseStatus"]["properties"]["code"]["type"] == "long"
    assert audit["objectRef"]["properties"]["name"]["type"] == "keyword"   # dynamic: keyword
    assert fields["kubernetes"]["properties"]["labels"]["type"] == "flattened"


def test_without_ilm_one_warning_says_retention_is_not_enforced(
        unused_config: ElasticsearchConfig, caplog: pytest.LogCaptureFixture,
        client: Elasticsearch, tmp_path: Path) -> None:
    config = unused_config
    with caplog.at_level(logging.WARNING, logger="sinks.elasticsearch"):
        store = config.build(tmp_path)
        store.close()
    assert store.ilm is False                  # the test server has no x-pack
    (warning,) = [r for r in caplog.records if r.name.startswith("sinks.elasticsearch")]
    assert warning.getMessage().startswith("Retention is not enforced")
    template = client.indices.get_index_template(name=f"containertrail-events-{config.namespace}")
    assert "lifecycle" not in str(template["index_templates"][0]["index_template"]["template"])


def test_check_fails_when_the_templates_are_gone(unused_config: ElasticsearchConfig,
                                                 client: Elasticsearch, tmp_path: Path) -> None:
    store = unused_config.build(tmp_path)
    try:
        store.check()
        client.indices.delete_index_template(name=f"containertrail-alerts-{store.namespace}")
        with pytest.raises(Unavailable, match="lacks the index templates containertrail-alerts"):
            store.check()
    finally:
        store.close()


def test_an_unreachable_cluster_is_unavailable(tmp_path: Path) -> None:
    config = ElasticsearchConfig(hosts=["http://127.0.0.1:1"], max_retries=0,
                                 request_timeout_secs=2)
    with pytest.raises(Unavailable, match="cannot install templates"):
        config.build(tmp_path)


def test_a_replay_stores_nothing_twice_even_across_a_rollover(
        store: ElasticsearchStore, client: Elasticsearch) -> None:
    stream = AUDIT_STREAM.format(ns=store.namespace)
    assert store.write(EVENTS).delivered == len(EVENTS)
    assert store.write(EVENTS).delivered == len(EVENTS)           # 409s, or skipped
    rolled = client.indices.rollover(alias=stream)
    assert rolled["rolled_over"]
    again = store.write(EVENTS)
    client.indices.refresh(index=stream)
    assert (again.delivered, again.retry, again.rejected) == (len(EVENTS), (), ())
    assert store.count("*") == len(EVENTS)
    assert client.count(index=rolled["new_index"])["count"] == 0


def searches(client: Elasticsearch, index: str) -> int:
    """Search queries run on `index` so far (its shards' query_total)."""
    stats = client.indices.stats(index=index, metric="search")
    return int(stats["_all"]["total"]["search"]["query_total"])


def renamed(events: list[Any], prefix: str) -> list[Any]:
    return [e.model_copy(update={"event": e.event.model_copy(update={"id": f"{prefix}{i}"})})
            for i, e in enumerate(events)]


def test_writes_to_a_stream_that_never_rolled_over_run_no_id_lookup(
        store: ElasticsearchStore, client: Elasticsearch) -> None:
    """Its write index refuses a stored id itself (409): a search for ids would only cost."""
    stream = AUDIT_STREAM.format(ns=store.namespace)
    assert store.write(EVENTS).delivered == len(EVENTS)
    before = searches(client, stream)
    assert store.write(EVENTS).delivered == len(EVENTS)             # a replay: 409s
    assert store.write(renamed(EVENTS, "more-")).delivered == len(EVENTS)
    assert searches(client, stream) == before
    client.indices.refresh(index=stream)
    assert store.count("*") == 2 * len(EVENTS)


def test_once_a_rollover_is_known_a_replay_is_found_in_the_older_index(
        store: ElasticsearchStore, client: Elasticsearch) -> None:
    """The store writes new events after the rollover (and so learns of it), then the old
    events are replayed: the lookup in the older backing index leaves them out."""
    stream = AUDIT_STREAM.format(ns=store.namespace)
    assert store.write(EVENTS).delivered == len(EVENTS)
    rolled = client.indices.rollover(alias=stream)
    assert store.write(renamed(EVENTS, "after-")).delivered == len(EVENTS)
    older = rolled["old_index"]
    before = searches(client, older)
    again = store.write(EVENTS)
    assert (again.delivered, again.retry, again.rejected) == (len(EVENTS), (), ())
    assert searches(client, older) > before                          # looked up there
    client.indices.refresh(index=stream)
    assert client.count(index=rolled["new_index"])["count"] == len(EVENTS)  # only the new ones
    assert store.count("*") == 2 * len(EVENTS)


def test_a_mapping_error_dead_letters_that_document_and_stores_the_rest(
        store: ElasticsearchStore) -> None:
    good = EVENTS[0]
    audit: dict[str, Any] = dict(EVENTS[1].kubernetes.audit or {})  # type: ignore[union-attr]
    audit["responseStatus"] = {"code": {"not": "a number"}}        # the template says long
    bad = EVENTS[1].model_copy(update={"kubernetes": EVENTS[1].kubernetes.model_copy(  # type: ignore[union-attr]
        update={"audit": audit})})
    result = store.write([good, bad, EVENTS[2]])
    assert (result.delivered, result.retry) == (2, ())
    (dead,) = result.rejected
    assert (dead.reason, dead.stage, dead.dataset) == (Reason.REJECTED_BY_STORE.value, "store",
                                                       "kubernetes.audit")
    assert "kubernetes.audit.responseStatus.code" in dead.detail
    assert dead.detail.startswith("document_parsing_exception")
    assert orjson.loads(dead.original) == orjson.loads(encode(bad))
    assert store.count("*") == 2


def test_a_batch_split_into_concurrent_requests_keeps_each_item_result(
        store: ElasticsearchStore) -> None:
    """600 events go out as two bulk requests at once (concurrent_requests: 2): the mapping
    error in the second is dead-lettered by itself, the rest stored once, and a replay of the
    whole batch stores nothing twice."""
    template = EVENTS[0]
    batch = [template.model_copy(update={"event": template.event.model_copy(
        update={"id": f"split-{i:04d}"})}) for i in range(600)]
    audit: dict[str, Any] = dict(template.kubernetes.audit or {})  # type: ignore[union-attr]
    audit["responseStatus"] = {"code": {"not": "a number"}}
    batch[450] = batch[450].model_copy(update={"kubernetes": template.kubernetes.model_copy(  # type: ignore[union-attr]
        update={"audit": audit})})
    assert store.config.concurrent_requests == 2
    result = store.write(batch)
    assert (result.delivered, result.retry) == (599, ())
    (dead,) = result.rejected
    assert orjson.loads(dead.original)["event"]["id"] == "split-0450"
    again = store.write(batch)
    assert (again.delivered, len(again.rejected)) == (599, 1)
    assert store.count("event.id:split-*") == 599


def test_a_document_the_cluster_refuses_for_now_429_is_kept_for_a_retry(
        store: ElasticsearchStore, client: Elasticsearch) -> None:
    stream = AUDIT_STREAM.format(ns=store.namespace)
    store.write(EVENTS[:1])
    # The block a full disk sets: every write is refused with 429 until it is lifted.
    client.indices.put_settings(index=stream, settings={"index.blocks.read_only_allow_delete": True})
    try:
        refused = store.write(EVENTS[1:3])
        raw = client.bulk(operations=[{"create": {"_index": stream, "_id": "x"}},
                                      {"@timestamp": "2026-03-01T00:00:00Z"}])
    finally:
        client.indices.put_settings(index=stream,
                                    settings={"index.blocks.read_only_allow_delete": None})
    (item,) = raw["items"]
    assert item["create"]["status"] == 429
    assert classify(item["create"]) is Outcome.RETRY
    assert (refused.delivered, refused.retry, refused.rejected) == (0, tuple(EVENTS[1:3]), ())
    assert store.write(EVENTS[1:3]).delivered == 2
    assert store.count("*") == 3


def test_a_search_waits_for_a_shard_that_is_still_starting(store: ElasticsearchStore,
                                                            client: Elasticsearch) -> None:
    """A new backing index has no shard to answer until its primary starts; a search then is
    retried, not failed, and never answers with part of the data. Here shard allocation is held off for a second while a new
    stream of the namespace is created, as a first write of a new dataset creates it."""
    assert store.write(EVENTS).delivered == len(EVENTS)
    new_stream = f"logs-containertrail.probe-{store.namespace}"
    client.cluster.put_settings(transient={"cluster.routing.allocation.enable": "none"})
    try:
        with pytest.raises(ConnectionTimeout):     # it waits for the primary: created, unassigned
            client.options(request_timeout=1).index(
                index=new_stream, op_type="create", document={"@timestamp": "2026-01-01T00:00:00Z"})
        partial = client.search(index=f"logs-containertrail.*-{store.namespace}")
        assert partial["_shards"]["failed"] >= 1     # Elasticsearch's default: a partial answer
        allocated = threading.Event()

        def allocate() -> None:
            client.cluster.put_settings(transient={"cluster.routing.allocation.enable": None})
            allocated.set()
        allocating = threading.Timer(1.0, allocate)
        allocating.start()
        found = store.search("*", limit=100)
        answered_after_allocation = allocated.is_set()   # not a partial answer before it
        counted = store.count("*")
        allocating.join()
    finally:
        client.cluster.put_settings(transient={"cluster.routing.allocation.enable": None})
    assert {doc["event"]["id"] for doc in found} >= {event.event.id for event in EVENTS}
    assert answered_after_allocation
    assert counted >= len(EVENTS)
