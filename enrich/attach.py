"""Graph -> identity -> fields on the event. Pure: reads the graph, never changes it.

`resolve` answers "who is this container / pod?" from the facts alone; ingest-time enrichment
(`attach`) and `ctrail timeline` (at query time, so events that arrived before their facts are
explained too) both use it. The event's own values win: the graph only fills what is missing
(and says so in `containertrail.inferred`), except a short container id, which becomes the full
one. The timeline first drops what was inferred at ingest (`uninferred`), so what an event is
shown with never depends on the order events happened to be enriched in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from ctrail.event import (
    Actor,
    Container,
    ContainerImage,
    ContainerTrail,
    Event,
    ImageHash,
    Kubernetes,
    KubernetesContainer,
    KubernetesNode,
    KubernetesPod,
    Orchestrator,
    OrchestratorResource,
    OrchestratorResourceParent,
    Workload,
    fixed_width,
)
from enrich.graph import Container as ContainerRecord, EntityGraph, Pod, repository_of, split_image

# Who acts for a principal rather than as one: kube-controller-manager's controllers (their
# service accounts in kube-system), kubelets (system:node:*, mirror pods) and the other system:*
# components. Service accounts elsewhere (CI, Argo CD) and system:anonymous are principals.
SERVICE_ACCOUNTS: Final = "system:serviceaccount:"
CONTROLLER_ACCOUNTS: Final = "system:serviceaccount:kube-system:"
PRINCIPAL_SYSTEM_USERS: Final = frozenset({"system:anonymous"})


@dataclass(frozen=True, slots=True)
class Identity:
    container_id: str | None = None
    container_name: str | None = None
    namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    node: str | None = None
    owner_kind: str | None = None
    owner_name: str | None = None
    workload_kind: str | None = None
    workload_name: str | None = None
    image_name: str | None = None
    image_tag: str | None = None
    digest: str | None = None
    deployed_by: str | None = None
    deployed_via: str | None = None
    deployed_at: int | None = None
    pushed_by: str | None = None
    pushed_at: int | None = None
    pushed_from: str | None = None
    first_seen: int | None = None
    last_seen: int | None = None
    gone: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601, absent values left out."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value is None:
                continue
            if name.endswith(("_at", "_seen")) or name == "gone":
                value = iso(value)
            out[name] = value
        return out


def iso(seconds: int) -> str:
    """In the one fixed-width form every stored time has (ctrail.event.fixed_width)."""
    return fixed_width(datetime.fromtimestamp(seconds, timezone.utc))


def resolve(graph: EntityGraph, container_id: str | None = None, namespace: str | None = None,
            pod_name: str | None = None) -> Identity | None:
    """What the graph knows about a container (by full or short id) or a pod; None if nothing."""
    container = graph.container(container_id) if container_id else None
    pod_key = container.pod if container is not None else None
    if pod_key is None and namespace and pod_name:
        pod_key = f"{namespace}/{pod_name}"
    pod = graph.tables["pod"].get(pod_key) if pod_key else None
    if container is None and pod is None:
        return None
    ns, _, name = (pod_key or "").partition("/")
    fields: dict[str, Any] = {"namespace": ns or None, "pod_name": name or None}
    first = [r.first for r in (container, pod) if r is not None]
    last = [r.last for r in (container, pod) if r is not None]
    fields.update(first_seen=min(first), last_seen=max(last))
    if pod is not None:
        assert isinstance(pod, Pod)
        fields.update(pod_uid=pod.uid, node=pod.node, gone=pod.gone)
        fields.update(_workload(graph, ns, pod))
    if container is not None:
        fields.update(container_id=container.id, container_name=container.name,
                      pod_uid=container.uid or fields.get("pod_uid"),
                      gone=container.gone or fields.get("gone"))
    fields.update(_image(graph, container, pod, min(first)))
    return Identity(**fields)


def _workload(graph: EntityGraph, namespace: str, pod: Pod) -> dict[str, Any]:
    """The owner chain up to the top workload, and who deployed it: the last principal (a
    person, a CI service account, Argo CD: anyone but Kubernetes' own controllers) that created
    or changed a workload of the chain before the pod appeared, else the last one known. The
    controller that created the pod (the ReplicaSet controller, the Job controller) is kept as
    `deployed_via`; when no principal is known, nobody is named as the deployer."""
    via = pod.creator if pod.creator and is_controller(pod.creator) else None
    if not pod.owner:
        return {"deployed_by": None if via else pod.creator, "deployed_via": via,
                "deployed_at": pod.first if pod.creator and not via else None}
    kind, name = pod.owner
    out: dict[str, Any] = {"owner_kind": kind, "owner_name": name}
    changes: list[tuple[int, str]] = []
    for _ in range(4):                       # Pod -> ReplicaSet -> Deployment; Job -> CronJob
        record = graph.workload(kind, namespace, name)
        if record is None:
            break
        changes.extend(record.changes or ())
        if not record.owner:
            break
        kind, name = record.owner
    out.update(workload_kind=kind, workload_name=name)
    principals = sorted(c for c in changes if not is_controller(c[1]))
    before = [c for c in principals if c[0] <= pod.first] or principals
    controllers = sorted(c for c in changes if is_controller(c[1]))
    via = via or (controllers[-1][1] if controllers else None)
    if before:
        out.update(deployed_at=before[-1][0], deployed_by=before[-1][1])
    elif pod.creator and not is_controller(pod.creator):
        out.update(deployed_at=pod.first, deployed_by=pod.creator)
    out.update(deployed_via=via)
    return out


def is_controller(user: str) -> bool:
    """Kubernetes' own controllers and components, which act on a principal's behalf."""
    if user.startswith(SERVICE_ACCOUNTS):
        return user.startswith(CONTROLLER_ACCOUNTS)
    return user.startswith("system:") and user not in PRINCIPAL_SYSTEM_USERS


def _image(graph: EntityGraph, container: ContainerRecord | None, pod: Pod | None,
           started: int) -> dict[str, Any]:
    reference = container.image if container is not None else None
    if reference is None and pod is not None and pod.images:
        wanted = container.name if container is not None else None
        matches = [image for cname, image in pod.images if cname == wanted]
        # No container name (a pod subject, or a Falco-only container): the last spec
        # container, as init containers come first.
        reference = matches[0] if matches else (pod.images[-1][1] if wanted is None else None)
    digest = container.digest if container is not None else None
    if reference is None or reference.startswith("sha256:"):   # an image id names no manifest
        return {"digest": digest}
    name, tag, pinned = split_image(reference)
    # A tag is mutable: the digest it pointed to when the pod started is what ran.
    digest = digest or pinned or (graph.digest_at(repository_of(name), tag or "latest", started)
                                  if name else None)
    out: dict[str, Any] = {"image_name": name, "image_tag": tag, "digest": digest}
    push = graph.push(digest) if digest else None
    if push is not None:
        out.update(pushed_by=push.user, pushed_at=push.time, pushed_from=push.ip)
    return out


def attach(event: Event, identity: Identity) -> Event:
    """The event with the identity's fields filled in where the event has none; the paths
    filled are listed in `containertrail.inferred`."""
    inferred: list[str] = []

    def fill(path: str, current: Any, value: Any) -> Any:
        if current or not value:
            return current
        inferred.append(path)
        return value

    update: dict[str, Any] = {}
    container = event.container or Container()
    image = container.image or ContainerImage()
    new_image = image.model_copy(update={
        "name": fill("container.image.name", image.name, identity.image_name),
        "tag": fill("container.image.tag", image.tag,
                    (identity.image_tag,) if identity.image_tag else ()),
        "hash": fill("container.image.hash.all", image.hash,
                     ImageHash(all=(identity.digest,)) if identity.digest else None)})
    new_container = container.model_copy(update={
        # A short id becomes the full one: the same observed container, not an inference.
        "id": identity.container_id or container.id,
        "image": new_image if new_image != ContainerImage() else container.image})
    if new_container != (event.container or Container()):
        update["container"] = new_container
    k8s = event.kubernetes or Kubernetes()
    pod, node, k8s_container = (k8s.pod or KubernetesPod(), k8s.node or KubernetesNode(),
                                k8s.container or KubernetesContainer())
    new_k8s = k8s.model_copy(update={
        "namespace": fill("kubernetes.namespace", k8s.namespace, identity.namespace),
        "pod": _some(pod.model_copy(update={
            "name": fill("kubernetes.pod.name", pod.name, identity.pod_name),
            "uid": fill("kubernetes.pod.uid", pod.uid, identity.pod_uid)}), KubernetesPod),
        "node": _some(node.model_copy(update={
            "name": fill("kubernetes.node.name", node.name, identity.node)}), KubernetesNode),
        "container": _some(k8s_container.model_copy(update={
            "name": fill("kubernetes.container.name", k8s_container.name,
                         identity.container_name)}), KubernetesContainer)})
    if new_k8s != (event.kubernetes or Kubernetes()):
        update["kubernetes"] = new_k8s
    if identity.workload_kind:
        orchestrator = _orchestrator(event.orchestrator, identity, inferred)
        if orchestrator != event.orchestrator:
            update["orchestrator"] = orchestrator
    if event.containertrail is not None and event.containertrail.inferred:
        inferred.extend(event.containertrail.inferred)      # enriched twice: still inferred
    trail = _trail(identity, tuple(sorted(set(inferred))))
    if trail is not None:
        update["containertrail"] = trail
    return event.model_copy(update=update) if update else event


def uninferred(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document without what the graph inferred at ingest (its observed fields only),
    so that `attach` can fill it in again from what the graph knows now."""
    trail = doc.get("containertrail")
    if not isinstance(trail, dict):
        return doc
    out = orjson.loads(orjson.dumps(doc))              # a deep copy: the caller keeps its own
    for path in ("containertrail", *trail.get("inferred", ())):
        _drop(out, path.split("."))
    return out


def _drop(doc: dict[str, Any], path: list[str]) -> None:
    """Remove doc[path], and any object that removal leaves empty."""
    head = doc.get(path[0])
    if len(path) > 1 and isinstance(head, dict):
        _drop(head, path[1:])
        if head:
            return
    doc.pop(path[0], None)


def _some(value: Any, model: type) -> Any:
    return None if value == model() else value


def _orchestrator(current: Orchestrator | None, identity: Identity,
                  inferred: list[str]) -> Orchestrator | None:
    parent = OrchestratorResourceParent(type=identity.workload_kind)
    if current is None:
        inferred.extend(("orchestrator.type", "orchestrator.namespace",
                         "orchestrator.resource.type", "orchestrator.resource.name",
                         "orchestrator.resource.parent.type"))
        return Orchestrator(type="kubernetes", namespace=identity.namespace,
                            resource=OrchestratorResource(type="pods", name=identity.pod_name,
                                                          parent=parent))
    resource = current.resource
    if resource is None or not (resource.type or "").startswith("pods") or resource.parent:
        return current       # an audit event about another object: its parent is not ours
    inferred.append("orchestrator.resource.parent.type")
    return current.model_copy(update={"resource": resource.model_copy(update={"parent": parent})})


def _trail(identity: Identity, inferred: tuple[str, ...]) -> ContainerTrail | None:
    workload = (Workload(kind=identity.workload_kind, name=identity.workload_name)
                if identity.workload_kind else None)
    deployed = (Actor(name=identity.deployed_by, time=_dt(identity.deployed_at))
                if identity.deployed_by else None)
    via = Actor(name=identity.deployed_via) if identity.deployed_via else None
    pushed = (Actor(name=identity.pushed_by, time=_dt(identity.pushed_at), ip=identity.pushed_from)
              if identity.pushed_by or identity.pushed_at else None)
    if workload is None and deployed is None and via is None and pushed is None and not inferred:
        return None
    return ContainerTrail(workload=workload, deployed_by=deployed, deployed_via=via,
                          image_pushed_by=pushed, inferred=inferred or None)


def _dt(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None
