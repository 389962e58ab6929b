"""Event -> facts for the entity graph. Pure: reads only the event.

- Kubernetes audit: pod creates and updates (uid, node, owner, creator, spec images, and the
  container ids and image digests of `status.containerStatuses`), pods/binding (the node), pod
  deletes; workload creates, updates and deletes (owner references, and who changed them).
  Failed requests (status >= 400) changed nothing and teach nothing.
- Runtime (Docker events, Falco alerts, container log paths): the container id with its pod
  (the kubelet's io.kubernetes.* labels or the log path, already mapped to `kubernetes.*` by
  the parsers), its Kubernetes container name and image; die/destroy/start move `gone`.
- Kubernetes API objects, listed and watched when the API is configured (enrich.kube_api):
  the pod and workload facts of an audit update, without who made it.
- Registries (Distribution, Harbor): manifest pushes (digest, repository, tag, actor, source
  address), pulls, deletes; a push with a tag adds to that tag's history.
"""

from __future__ import annotations

from typing import Any, Final

from ctrail.event import Event
from enrich.graph import Fact

WORKLOAD_KINDS: Final = {"replicasets": "ReplicaSet", "deployments": "Deployment",
                         "jobs": "Job", "cronjobs": "CronJob", "statefulsets": "StatefulSet",
                         "daemonsets": "DaemonSet", "replicationcontrollers": "ReplicationController"}
CHANGING: Final = frozenset({"create", "update", "patch"})
GONE_ACTIONS: Final = frozenset({"die", "destroy", "kill", "oom", "stop"})


def epoch(event: Event) -> int:
    return int(event.timestamp.timestamp())


def learn(event: Event) -> list[Fact]:
    dataset = event.event.dataset
    if dataset == "kubernetes.audit":
        audit = event.kubernetes.audit if event.kubernetes else None
        return from_audit(audit, epoch(event)) if audit else []
    if event.registry is not None:
        return from_registry(event)
    return from_runtime(event)


# ── images ────────────────────────────────────────────────────────────────────────────────

def digest_of_image_id(image_id: str | None) -> str | None:
    """The repo digest in a containerStatus imageID (docker-pullable://repo@sha256:...)."""
    if image_id and "@sha256:" in image_id:
        return "sha256:" + image_id.rsplit("@sha256:", 1)[1]
    return None


# ── Kubernetes audit ──────────────────────────────────────────────────────────────────────

def from_audit(audit: dict[str, Any], seen: int) -> list[Fact]:
    ref = audit.get("objectRef") or {}
    code = (audit.get("responseStatus") or {}).get("code")
    if isinstance(code, int) and code >= 400:
        return []
    resource, sub, verb = ref.get("resource"), ref.get("subresource"), audit.get("verb")
    user = (audit.get("user") or {}).get("username")
    obj = _object(audit)
    meta = _mapping(obj.get("metadata"))
    namespace = ref.get("namespace") or meta.get("namespace")
    name = ref.get("name") or meta.get("name")
    if not namespace or not name:
        return []
    if resource == "pods":
        return _pod_facts(audit, obj, meta, f"{namespace}/{name}", verb, sub, user, seen)
    kind = WORKLOAD_KINDS.get(resource or "")
    if kind is None or sub is not None:     # status/scale updates are not someone deploying
        return []
    key = f"{kind}/{namespace}/{name}"
    if verb == "delete":
        return [Fact("workload", key, seen, {"gone": seen})]
    if verb not in CHANGING:
        return []
    return [Fact("workload", key, seen, {"owner": _controller(meta),
                                         "changes": [(seen, user)] if user else None})]


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _object(audit: dict[str, Any]) -> dict[str, Any]:
    for key in ("responseObject", "requestObject"):
        obj = audit.get(key)
        if isinstance(obj, dict) and obj.get("kind") not in (None, "Status", "Binding"):
            return obj
    return {}


def _controller(meta: dict[str, Any]) -> tuple[str, str] | None:
    refs = [r for r in meta.get("ownerReferences") or () if isinstance(r, dict)]
    chosen = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if chosen and chosen.get("kind") and chosen.get("name"):
        return (str(chosen["kind"]), str(chosen["name"]))
    return None


def _pod_facts(audit: dict[str, Any], obj: dict[str, Any], meta: dict[str, Any], key: str,
               verb: str | None, sub: str | None, user: str | None, seen: int) -> list[Fact]:
    if sub == "binding":
        target = (audit.get("requestObject") or {}).get("target") or {}
        return [Fact("pod", key, seen, {"node": target.get("name")})] if target else []
    if verb == "delete" and sub is None:
        return [Fact("pod", key, seen, {"gone": seen})]
    if verb not in CHANGING or sub not in (None, "status", "ephemeralcontainers"):
        return []
    spec = _mapping(obj.get("spec"))
    images = [(c.get("name"), c.get("image")) for group in ("initContainers", "containers")
              for c in spec.get(group) or () if isinstance(c, dict) and c.get("image")]
    uid = meta.get("uid") or (audit.get("objectRef") or {}).get("uid")
    facts = [Fact("pod", key, seen, {
        "uid": uid, "node": spec.get("nodeName"), "owner": _controller(meta),
        "creator": user if verb == "create" and sub is None else None,
        "images": images or None})]
    status = _mapping(obj.get("status"))
    for group in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(group) or ():
            if not isinstance(cs, dict) or "://" not in str(cs.get("containerID") or ""):
                continue
            container_id = str(cs["containerID"]).split("://", 1)[1]
            facts.append(Fact("container", container_id, seen, {
                "id": container_id, "pod": key, "uid": uid, "name": cs.get("name"),
                "image": cs.get("image"), "digest": digest_of_image_id(cs.get("imageID"))}))
    return facts


# ── Kubernetes API objects (enrich.kube_api: list and watch) ──────────────────────────────

def from_api_object(resource: str, change: str, obj: dict[str, Any], seen: int) -> list[Fact]:
    """Facts from one object as the API lists or watches it (`change`: ADDED, MODIFIED,
    DELETED). The same facts as an audit update of that object carries, minus who made it:
    the API tells the state, the audit log tells the person."""
    meta = _mapping(obj.get("metadata"))
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        return []
    gone = change == "DELETED"
    if resource == "pods":
        key = f"{namespace}/{name}"
        if gone:
            return [Fact("pod", key, seen, {"gone": seen})]
        return _pod_facts({}, obj, meta, key, "update", None, None, seen)
    kind = WORKLOAD_KINDS.get(resource)
    if kind is None:
        return []
    key = f"{kind}/{namespace}/{name}"
    if gone:
        return [Fact("workload", key, seen, {"gone": seen})]
    return [Fact("workload", key, seen, {"owner": _controller(meta)})]


# ── runtime: Docker events, Falco alerts, container logs ───────────────────────────────────

def from_runtime(event: Event) -> list[Fact]:
    container, k8s, seen = event.container, event.kubernetes, epoch(event)
    pod_key = uid = None
    facts: list[Fact] = []
    if k8s is not None and k8s.namespace and k8s.pod is not None and k8s.pod.name:
        pod_key, uid = f"{k8s.namespace}/{k8s.pod.name}", k8s.pod.uid
        facts.append(Fact("pod", pod_key, seen, {"uid": uid}))
    if container is None or not container.id:
        return facts
    fields: dict[str, Any] = {"id": container.id, "pod": pod_key, "uid": uid,
                              "name": k8s.container.name if k8s and k8s.container else None}
    image = container.image
    if image is not None and image.name:
        fields["image"] = image.name + (f":{image.tag[0]}" if image.tag else "")
        digests = image.hash.all if image.hash else ()
        # An image given by name@digest: that digest is the manifest the container ran.
        fields["digest"] = next((d for d in digests if d.startswith("sha256:")), None)
    action = event.event.action
    if event.event.dataset == "docker.events" and event.docker and event.docker.type == "container":
        if action in GONE_ACTIONS:
            fields["gone"] = seen
        elif action in ("start", "restart", "unpause"):
            fields["gone"] = 0
    facts.append(Fact("container", container.id, seen, fields))
    return facts


# ── registries ────────────────────────────────────────────────────────────────────────────

def from_registry(event: Event) -> list[Fact]:
    registry, seen = event.registry, epoch(event)
    assert registry is not None
    digest, action = registry.digest, event.event.action
    manifest = registry.tag is not None or registry.type == "harbor" or (
        registry.media_type is not None and ("manifest" in registry.media_type
                                             or "image.index" in registry.media_type))
    if not digest or not manifest:
        return []
    user = event.user.name if event.user else None
    ip = event.source.ip if event.source else None
    if action == "push":
        facts = [Fact("push", digest, seen, {"repository": registry.repository,
                                             "tag": registry.tag, "user": user, "ip": ip,
                                             "time": seen})]
        if registry.repository and registry.tag:
            facts.append(Fact("tag", f"{registry.repository}:{registry.tag}", seen,
                              {"history": [(seen, digest)]}))
        return facts
    if action == "pull":
        return [Fact("push", digest, seen, {"repository": registry.repository,
                                            "pulled_by": user, "pulled": seen})]
    if action == "delete":
        return [Fact("push", digest, seen, {"repository": registry.repository, "deleted": seen})]
    return []
