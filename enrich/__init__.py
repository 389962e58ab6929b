"""Enrichers: attach what is known about an event's subject before it is stored and matched.

One enricher: the entity graph (enrich.graph), and the configured cluster name. What an audit
event says about its own object the parser already set (collector.parsers.audit_subject).
"""

from __future__ import annotations

import queue
import time
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from ctrail.bus import ENTITIES, Bus
from ctrail.event import Event, OrchestratorCluster
from enrich.attach import attach, resolve
from enrich.graph import EntityGraph, Fact
from enrich.kube_api import KubeApiConfig, KubeWatcher
from enrich.learn import learn
from enrich.persistence import EntityReader, FactLog, LocalCompaction

EXPIRE_EVERY_SECS = 3600.0


class EnrichConfig(BaseModel):
    """Enrichment settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["graph"] = "graph"
    cluster_name: str | None = Field(
        None, description="orchestrator.cluster.name for events whose source does not say it.")
    retention_days: PositiveFloat = Field(
        30, description="Days the entity graph keeps a container, pod, workload or image push "
                        "after it went away (or was last seen).")
    kubernetes_api: KubeApiConfig = Field(
        KubeApiConfig(), description="List and watch pods and workloads in the Kubernetes API "
                                     "(off unless a kubeconfig or in_cluster is given).")
    rebuild_timeout_secs: PositiveFloat = Field(
        60, description="At startup, the longest to spend rebuilding the graph from the "
                        "ctrail.entities topic before processing events.")

    def build(self, bus: Bus | None = None, clock: Callable[[], float] = time.time
              ) -> "GraphEnricher":
        """Without a bus (tests, one-off use) the graph lives in memory only."""
        return GraphEnricher(self, bus, clock)


def with_cluster(event: Event, cluster_name: str | None) -> Event:
    """An audit event with orchestrator.cluster.name, when configured and its source did not
    say it."""
    orchestrator = event.orchestrator
    if cluster_name is None or orchestrator is None or orchestrator.cluster is not None \
            or event.kubernetes is None or event.kubernetes.audit is None:
        return event
    cluster = OrchestratorCluster(name=cluster_name)
    return event.model_copy(update={"orchestrator": orchestrator.model_copy(
        update={"cluster": cluster})})


class GraphEnricher:
    """Learns facts from each event, then attaches what the graph knows at that moment.

    With a bus: the graph is rebuilt from `ctrail.entities` on construction, `begin_batch`
    takes in facts other enrich workers appended (and those the Kubernetes API watcher
    queued, when configured), `end_batch` appends what changed (and returns only when that is
    durable, so a batch is committed only after its facts). The stage also calls both when no
    event waits, so such facts do not wait for the next event."""

    def __init__(self, config: EnrichConfig, bus: Bus | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cluster_name = config.cluster_name
        self.graph = EntityGraph(config.retention_days, clock)
        self.clock = clock
        self.reader = EntityReader(bus) if bus is not None else None
        self.log = FactLog(bus.producer()) if bus is not None else None
        # Kafka compacts ctrail.entities itself; the local log is compacted by its one writer.
        self.compaction = (LocalCompaction(self.reader, self.log)
                           if bus is not None and self.reader is not None
                           and self.log is not None and not bus.compacts(ENTITIES) else None)
        if self.reader is not None:
            self.reader.catch_up(self.graph, config.rebuild_timeout_secs)
        self.graph.expire()
        self._expired_at = clock()
        # The API watcher's threads hand facts over through a queue: the graph has one owner.
        self.api_facts: queue.SimpleQueue[list[Fact]] = queue.SimpleQueue()
        self.watcher = (KubeWatcher(config.kubernetes_api, self.api_facts.put, clock).start()
                        if config.kubernetes_api.enabled else None)

    def enrich(self, event: Event) -> Event:
        event = with_cluster(event, self.cluster_name)
        for fact in learn(event):
            self.graph.apply(fact)
        container, k8s = event.container, event.kubernetes
        identity = resolve(self.graph, container.id if container else None,
                           k8s.namespace if k8s else None,
                           k8s.pod.name if k8s and k8s.pod else None)
        return attach(event, identity) if identity is not None else event

    def begin_batch(self) -> None:
        if self.reader is not None:
            self.reader.tail(self.graph)
        while not self.api_facts.empty():
            for fact in self.api_facts.get_nowait():
                self.graph.apply(fact)
        if self.clock() - self._expired_at >= EXPIRE_EVERY_SECS:
            self.graph.expire()
            self._expired_at = self.clock()

    def end_batch(self) -> None:
        if self.log is not None:
            self.log.publish(self.graph)
            if self.compaction is not None and self.compaction.due(self.graph):
                self.compaction.snapshot(self.graph)
        else:
            self.graph.dirty.clear()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.reader is not None:
            self.reader.close()
