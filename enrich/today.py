"""What the entity graph knows today, for the readers of stored events (`ctrail timeline`, the
reports): the graph rebuilt from the entities topic, and a stored event shown with it.

An event was enriched with what the graph knew when it arrived; facts that came later (an
audit event after the runtime event, a push seen after the deploy), and the order in which
workers happened to enrich, change what it was stored with. Readers that explain an event
with today's graph answer the same whatever that order was, in embedded or distributed mode.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from ctrail.bus import ENTITIES
from ctrail.bus.codec import encode
from ctrail.event import Event
from ctrail.settings import Settings
from enrich.attach import attach, resolve, uninferred
from enrich.graph import EntityGraph
from enrich.persistence import LOCAL_GROUP, rebuild


def load_graph(settings: Settings) -> EntityGraph:
    """The graph as the enricher has it, from the entities topic (read-only)."""
    graph = EntityGraph(settings.enrich.retention_days)
    # Read-only: on the local log its segment files, without its lock, so this works beside
    # `ctrail run`; on Kafka in a group of this read's own.
    rebuild(graph, settings.bus.read_topic(settings.data_dir, ENTITIES, LOCAL_GROUP,
                                           settings.enrich.rebuild_timeout_secs))
    graph.expire()
    graph.dirty.clear()
    return graph


def explain(graph: EntityGraph, doc: dict[str, Any]) -> dict[str, Any]:
    """The stored document with what the graph knows now in place of what it knew at ingest
    (the facts may not have arrived yet, and events are enriched in arrival order, which
    differs between runs and modes). A document the graph knows nothing about any more (its
    facts expired) is shown as stored: its ingest-time enrichment is then the best record.
    A document that is not one of our events is shown as stored too."""
    try:
        event = Event.model_validate(doc)
    except ValidationError:
        return doc
    container, k8s = event.container, event.kubernetes
    identity = resolve(graph, container.id if container else None,
                       k8s.namespace if k8s else None, k8s.pod.name if k8s and k8s.pod else None)
    if identity is None:
        return doc
    observed = Event.model_validate(uninferred(doc))
    return orjson.loads(encode(attach(observed, identity)))
