"""The one typed model that crosses every stage boundary: Event, Alert and Rejection.

Field names follow the Elastic Common Schema (ECS) so Kibana and Elastic Security read our
documents as they are. `registry.*`, `docker.*` and `alert.*` are our own groups. Raw Kubernetes
audit fields stay under `kubernetes.audit.*`, as Elastic's Kubernetes integration keeps them, and
raw Falco alerts under `falco.*`, as Elastic's Falco integration keeps them.

The models are frozen; stages derive new events with `model_copy(update=...)`. Serialisation
(`ctrail.bus.codec`) is pydantic-core's, from and to JSON bytes, with no dict round trip. Every
time is written in one fixed-width UTC form (`Instant`), so times compare as text as they do as
instants.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def fixed_width(moment: datetime) -> str:
    """A time as every store and output writes it: UTC, microseconds always, `Z`
    (2026-11-20T10:12:06.000000Z). Compared as text, these order as the instants do; pydantic's
    own form drops a zero fraction (10:12:06Z sorts after 10:12:06.5Z) and keeps offsets."""
    global _last_written
    last = _last_written
    if moment is last[0]:           # `event.ingested`: one datetime for a request's events
        return last[1]
    utc = moment
    if utc.tzinfo is not timezone.utc:
        utc = utc.replace(tzinfo=timezone.utc) if utc.tzinfo is None \
            else utc.astimezone(timezone.utc)
    # isoformat, not strftime: a third faster (three times per stored event), and its year has
    # four digits always (strftime writes year 5 as "5"); "+00:00" cut off is faster than a
    # datetime without a zone built to leave it out.
    written = utc.isoformat(timespec="microseconds")[:-6] + "Z"
    _last_written = (moment, written)
    return written


# The last time written, and its text (a tuple: replaced whole, so threads see either pair).
_last_written: tuple[datetime | None, str] = (None, "")


def stored_instant(text: object) -> datetime:
    """The instant of a stored time, whatever form it was written in (documents stored before
    the fixed-width form, or by another writer); the earliest instant when it is not a time, so
    sorting never fails on one bad document."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# A datetime written in its fixed-width form in JSON (the bus, both stores, --format json).
Instant = Annotated[datetime, PlainSerializer(fixed_width, return_type=str, when_used="json")]


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
    ingested: Instant
    created: Instant | None = None            # when the source wrote it, where it says so
    severity: int | None = None               # alerts: 21 low, 47 medium, 73 high, 99 critical


class User(EcsModel):
    name: str | None = None
    id: str | None = None


class Source(EcsModel):
    ip: str | None = None
    address: str | None = None


class Client(EcsModel):
    """ECS `client.*`: every address of a request's chain (Kubernetes audit sourceIPs)."""

    ip: tuple[str, ...] = ()


class UserAgent(EcsModel):
    original: str | None = None


class ImageHash(EcsModel):
    all: tuple[str, ...] = ()


class ContainerImage(EcsModel):
    name: str | None = None
    tag: tuple[str, ...] = ()
    hash: ImageHash | None = None


class ContainerSecurityContext(EcsModel):
    privileged: bool | None = None            # ECS container.security_context.privileged


class Container(EcsModel):
    id: str | None = None
    name: str | None = None
    runtime: str | None = None
    image: ContainerImage | None = None
    labels: dict[str, str] | None = None      # ECS container.labels (Docker inspect Config.Labels)
    security_context: ContainerSecurityContext | None = None


class OrchestratorCluster(EcsModel):
    name: str | None = None
    id: str | None = None                     # GKE: the project, as Elastic's integration has it


class OrchestratorResourceParent(EcsModel):
    type: str | None = None                   # ECS: the kind of the workload (Deployment, ...)


class OrchestratorResource(EcsModel):
    type: str | None = None
    name: str | None = None
    parent: OrchestratorResourceParent | None = None


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
    hash: tuple[str, ...] = ()                # image and blob digests, to pivot across sources
    hosts: tuple[str, ...] = ()


class ProcessParent(EcsModel):
    name: str | None = None
    pid: int | None = None
    executable: str | None = None
    command_line: str | None = None


class Process(EcsModel):
    """ECS `process.*`: Falco's proc.* fields, a Docker exec's command, a container's exit code."""

    name: str | None = None
    pid: int | None = None
    executable: str | None = None
    command_line: str | None = None
    exit_code: int | None = None
    parent: ProcessParent | None = None


class LogFile(EcsModel):
    path: str | None = None


class Log(EcsModel):
    """ECS `log.*`: where a log line was read from, and the level its producer gave it."""

    level: str | None = None
    file: LogFile | None = None


class HttpRequest(EcsModel):
    id: str | None = None
    method: str | None = None


class Http(EcsModel):
    request: HttpRequest | None = None


class EventRule(EcsModel):
    """ECS `rule.*` on an event that an external detector (Falco) raised; our own alerts use Rule."""

    id: str | None = None
    name: str | None = None
    ruleset: str | None = None


class Docker(EcsModel):
    """Our own `docker.*`: the Docker Engine event's object type, scope and actor, as sent."""

    type: str | None = None                   # container, image, network, volume, daemon, ...
    scope: str | None = None                  # local | swarm
    actor_id: str | None = None               # the object's id (a network id for network events)
    attributes: dict[str, str] | None = None  # Actor.Attributes: labels, image, name, exitCode...
    image_id: str | None = None               # inspect Image: the local image id (sha256:...)
    user: str | None = None                   # inspect Config.User ("" = the image's default)
    mounts: tuple[DockerMount, ...] | None = None   # inspect Mounts: ECS has no mount fields


class DockerMount(EcsModel):
    type: str | None = None                   # bind, volume, tmpfs, npipe, cluster
    name: str | None = None                   # the volume name
    source: str | None = None                 # the host path (bind) or volume path
    destination: str | None = None            # the path inside the container
    rw: bool | None = None


class RegistryScan(EcsModel):
    """A vulnerability scan of an image (Harbor's scan_overview), summarised."""

    status: str | None = None                 # Success, Error, Stopped, ...
    severity: str | None = None               # the worst severity found: None, Low, ... Critical
    report_id: str | None = None
    scanner: str | None = None                # "Trivy v0.37.2"
    total: int | None = None
    fixable: int | None = None
    counts: dict[str, int] | None = None      # vulnerabilities per severity


class Registry(EcsModel):
    """Our own `registry.*`: what a registry says happened to an image reference.

    Kept apart from `container.image.*`, which ECS reserves for the image a running container
    was started from; the entity graph joins the two on the digest (`related.hash`)."""

    type: str                                 # "distribution" or "harbor"
    event_id: str | None = None               # the registry's own id for this event
    repository: str | None = None             # "library/test", "harbor/alpine"
    namespace: str | None = None              # Harbor project
    digest: str | None = None
    tag: str | None = None
    media_type: str | None = None
    size: int | None = None
    url: str | None = None
    host: str | None = None                   # the registry as the client addressed it
    instance: str | None = None               # the registry instance that sent the event
    from_repository: str | None = None        # cross-repository blob mounts
    scan: RegistryScan | None = None
    details: dict[str, Any] | None = None     # event data we do not map (replication, retention)


class Workload(EcsModel):
    kind: str | None = None                   # Deployment, StatefulSet, DaemonSet, CronJob, Job...
    name: str | None = None


class Actor(EcsModel):
    name: str | None = None
    time: Instant | None = None
    ip: str | None = None


class ContainerTrail(EcsModel):
    """Our own `containertrail.*`: what the entity graph knows about an event's container.

    ECS has `orchestrator.resource.parent.type` but no parent name, and no field for who
    deployed a workload or pushed an image, hence this group (`containertrail.text` is the
    Elasticsearch free-text field, not a document field)."""

    workload: Workload | None = None          # the top owner: Pod -> ReplicaSet -> Deployment
    deployed_by: Actor | None = None          # who created or last changed that workload
    deployed_via: Actor | None = None         # the controller that created the pod for them
    image_pushed_by: Actor | None = None      # who pushed the image digest, when, from where
    # The ECS fields the graph filled in (dotted paths), as opposed to what the source itself
    # reported: an auditor can tell inferred from observed, and `ctrail timeline` replaces
    # them with what the graph knows now (which may be more than at ingest).
    inferred: tuple[str, ...] | None = None


class Event(EcsModel):
    timestamp: Instant = Field(alias="@timestamp")
    event: EventInfo
    user: User | None = None
    source: Source | None = None
    client: Client | None = None
    user_agent: UserAgent | None = None
    container: Container | None = None
    orchestrator: Orchestrator | None = None
    kubernetes: Kubernetes | None = None
    host: Host | None = None
    related: Related | None = None
    tags: tuple[str, ...] = ()
    message: str | None = None
    stream: str | None = None                 # container logs: stdout | stderr
    log: Log | None = None
    process: Process | None = None
    http: Http | None = None
    rule: EventRule | None = None
    docker: Docker | None = None
    registry: Registry | None = None
    falco: dict[str, Any] | None = None       # the raw Falco alert, as received
    containertrail: ContainerTrail | None = None

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
    timestamp: Instant = Field(alias="@timestamp")
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
    message: str | None = None              # an external detector's own words (Falco's output)

    @property
    def key(self) -> str:
        return self.alert.group_key


class Rejection(EcsModel):
    """A dead letter: a record that can never succeed, kept with its reason and origin."""

    id: str
    timestamp: Instant = Field(alias="@timestamp")
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


class DeadLetterReplay(EcsModel):
    """`ctrail dlq replay`'s verdict on one dead letter: its record now succeeds, or was
    rejected again for another reason (kept as the `successor` dead letter), or it stands again
    (`reopened`: a later replay of another record was rejected as this one). The newest verdict
    of a dead letter decides whether it still stands.

    Stored beside the dead letters rather than as a change to them: both stores are append-only
    (SQLite insert-once, Elasticsearch data streams take only `create`), and a dead letter is
    evidence of what happened at the time, which a later fix does not rewrite. `dlq list` and
    `dlq replay` leave out the dead letters that have one, unless asked for `--all`."""

    id: str                                   # hash(dead letter, outcome, successor, replay run)
    timestamp: Instant = Field(alias="@timestamp")
    dead_letter_id: str
    stage: str                                # the stage that rejected it, and judged it again
    outcome: Literal["succeeded", "rejected_again", "reopened"]
    successor: str | None = None              # rejected_again: the dead letter that replaces it
    reason: str | None = None                 # rejected_again: the successor's reason
