"""The one typed model that crosses every stage boundary: Event, Alert and Rejection.

Field names follow the Elastic Common Schema (ECS) so Kibana and Elastic Security read our
documents as they are. `registry.*` and `alert.*` are our own groups. Raw Kubernetes audit
fields stay under `kubernetes.audit.*`, as Elastic's Kubernetes integration keeps them.

The models are frozen; stages derive new events with `model_copy(update=...)`. Serialisation
(`ctrail.bus.codec`) is pydantic-core's, from and to JSON bytes, with no dict round trip.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EcsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EventInfo(EcsModel):
    """The ECS `event.*` group."""

    id: str                                   # deterministic: hash(source, raw record)
    kind: Literal["event", "alert"] = "event"
    category: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    action: str
    outcome: Literal["success", "failure", "unknown"] = "unknown"
    dataset: str                              # "kubernetes.audit", "docker.events", ...
    module: str                               # "kubernetes", "docker", ...
    original: str                             # the raw record, byte for byte
    ingested: datetime
    created: datetime | None = None           # when the source wrote it, where it says so
    severity: int | None = None               # alerts: 21 low, 47 medium, 73 high, 99 critical


class User(EcsModel):
    name: str | None = None
    id: str | None = None


class Source(EcsModel):
    ip: str | None = None
    address: str | None = None


class UserAgent(EcsModel):
    original: str | None = None


class ImageHash(EcsModel):
    all: tuple[str, ...] = ()


class ContainerImage(EcsModel):
    name: str | None = None
    tag: tuple[str, ...] = ()
    hash: ImageHash | None = None


class Container(EcsModel):
    id: str | None = None
    name: str | None = None
    runtime: str | None = None
    image: ContainerImage | None = None


class OrchestratorCluster(EcsModel):
    name: str | None = None


class OrchestratorResource(EcsModel):
    type: str | None = None
    name: str | None = None


class Orchestrator(EcsModel):
    type: str | None = None
    api_version: str | None = None
    namespace: str | None = None
    cluster: OrchestratorCluster | None = None
    resource: OrchestratorResource | None = None


class KubernetesPod(EcsModel):
    name: str | None = None
    uid: str | None = None


class KubernetesNode(EcsModel):
    name: str | None = None


class KubernetesContainer(EcsModel):
    name: str | None = None


class Kubernetes(EcsModel):
    namespace: str | None = None
    pod: KubernetesPod | None = None
    node: KubernetesNode | None = None
    container: KubernetesContainer | None = None
    labels: dict[str, str] | None = None
    audit: dict[str, Any] | None = None        # the raw audit.k8s.io Event, as received


class Host(EcsModel):
    name: str | None = None


class Related(EcsModel):
    user: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()


class Event(EcsModel):
    timestamp: datetime = Field(alias="@timestamp")
    event: EventInfo
    user: User | None = None
    source: Source | None = None
    user_agent: UserAgent | None = None
    container: Container | None = None
    orchestrator: Orchestrator | None = None
    kubernetes: Kubernetes | None = None
    host: Host | None = None
    related: Related | None = None
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The bus key: one pod's (or container's) events share a partition and stay in order."""
        k8s = self.kubernetes
        if k8s is not None and k8s.namespace and k8s.pod and k8s.pod.name:
            return f"{k8s.namespace}/{k8s.pod.name}"
        if self.container is not None and self.container.id:
            return self.container.id
        return self.event.id


class Severity(IntEnum):
    """Alert severity; the value is Elastic Security's risk score for the level."""

    INFORMATIONAL = 0
    LOW = 21
    MEDIUM = 47
    HIGH = 73
    CRITICAL = 99

    @property
    def word(self) -> str:
        return self.name.lower()

    @classmethod
    def from_word(cls, word: str) -> "Severity":
        return cls[word.strip().upper()]


class Rule(EcsModel):
    id: str
    name: str
    description: str | None = None
    reference: str | None = None
    ruleset: str | None = None


class ThreatTechnique(EcsModel):
    id: tuple[str, ...] = ()
    reference: tuple[str, ...] = ()


class ThreatTactic(EcsModel):
    name: tuple[str, ...] = ()


class Threat(EcsModel):
    framework: str = "MITRE ATT&CK"
    technique: ThreatTechnique | None = None
    tactic: ThreatTactic | None = None


class AlertInfo(EcsModel):
    """Our own `alert.*` group: the severity word, grouping, and the evidence behind it."""

    severity: str
    group_key: str
    count: int = 1
    event_ids: tuple[str, ...] = ()


class Alert(EcsModel):
    timestamp: datetime = Field(alias="@timestamp")
    event: EventInfo
    rule: Rule
    threat: Threat | None = None
    alert: AlertInfo
    user: User | None = None
    source: Source | None = None
    container: Container | None = None
    orchestrator: Orchestrator | None = None
    kubernetes: Kubernetes | None = None
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.alert.group_key


class Rejection(EcsModel):
    """A dead letter: a record that can never succeed, kept with its reason and origin."""

    id: str
    timestamp: datetime = Field(alias="@timestamp")
    stage: str
    reason: str
    detail: str
    dataset: str | None = None
    origin: str                               # "path:line", or "endpoint request-id"
    original: str                             # UTF-8 text, or base64 when original_encoding says so
    original_encoding: Literal["utf-8", "base64"] = "utf-8"

    @property
    def key(self) -> str:
        return self.id
