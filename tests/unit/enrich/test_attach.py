"""attach() fills what the graph knows and names what it inferred; uninferred() takes that back
out, so an event enriched early (half the facts known) reads the same as one enriched late."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from ctrail.bus.codec import encode
from ctrail.event import Event
from enrich.attach import attach, resolve, uninferred
from enrich.graph import EntityGraph
from tests.unit.enrich.test_graph import FULL, facts

FALCO_ORIGINAL = '{"output": "shell in container", "output_fields": {"container.id": "3f2a9c1e7b4d"}}'


def falco_event() -> Event:
    """A Falco alert as parsed: its short container id is all it knows of the container."""
    return Event.model_validate({
        "@timestamp": datetime(2023, 11, 14, 23, 0, tzinfo=timezone.utc),
        "event": {"id": "falco-1", "action": "Terminal shell in container", "dataset": "falco",
                  "module": "falco", "original": FALCO_ORIGINAL,
                  "ingested": datetime(2023, 11, 14, 23, 0, 1, tzinfo=timezone.utc)},
        "container": {"id": FULL[:12], "image": {"name": "reg.io/team/api"}}})


def graph_of(count: int) -> EntityGraph:
    graph = EntityGraph()
    for fact in facts()[:count]:
        graph.apply(fact)
    return graph


def doc_of(event: Event) -> dict[str, Any]:
    return orjson.loads(encode(event))


def test_inferred_fields_are_named_and_observed_ones_are_not() -> None:
    graph = graph_of(len(facts()))
    enriched = attach(falco_event(), resolve(graph, FULL[:12]))  # type: ignore[arg-type]
    assert enriched.container is not None and enriched.container.id == FULL
    assert enriched.containertrail is not None
    inferred = set(enriched.containertrail.inferred or ())
    assert {"kubernetes.namespace", "kubernetes.pod.name", "kubernetes.node.name",
            "container.image.hash.all", "orchestrator.resource.parent.type"} <= inferred
    assert "container.image.name" not in inferred        # Falco reported it: observed
    assert "container.id" not in inferred                # the short id, made whole


def test_uninferred_leaves_only_what_the_source_reported() -> None:
    graph = graph_of(len(facts()))
    reported = falco_event()
    enriched = doc_of(attach(reported, resolve(graph, FULL[:12])))  # type: ignore[arg-type]
    observed = Event.model_validate(uninferred(enriched))
    assert reported.container is not None
    assert observed == reported.model_copy(update={
        "container": reported.container.model_copy(update={"id": FULL})})
    assert "kubernetes" in enriched                      # the caller's document is untouched


def test_an_event_enriched_early_reads_like_one_enriched_late() -> None:
    # Early: the pod and its owner reference were known, not yet the workloads, nor the node.
    early_graph = EntityGraph()
    for fact in facts():
        if fact.kind != "workload":
            if "node" not in fact.fields:
                early_graph.apply(fact)
    early = attach(falco_event(), resolve(early_graph, FULL[:12]))  # type: ignore[arg-type]
    assert early.orchestrator is not None and early.orchestrator.resource is not None
    assert early.orchestrator.resource.parent is not None
    assert early.orchestrator.resource.parent.type == "ReplicaSet"

    today = graph_of(len(facts()))
    identity = resolve(today, FULL[:12])
    again = attach(Event.model_validate(uninferred(doc_of(early))), identity)  # type: ignore[arg-type]
    late = attach(falco_event(), identity)  # type: ignore[arg-type]
    assert doc_of(again) == doc_of(late)
    assert doc_of(again)["orchestrator"]["resource"]["parent"]["type"] == "Deployment"
    assert doc_of(again)["kubernetes"]["node"]["name"] == "node-7"
