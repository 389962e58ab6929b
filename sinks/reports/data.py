"""Pure helpers over the ECS documents reports read (source.py reads them from the store): pod
specs, image references, identities, one document per API request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Iterator

RBAC_RESOURCES = "(roles OR clusterroles OR rolebindings OR clusterrolebindings)"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
WORKLOAD_KINDS = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                            "CronJob"})


def get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def when(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00"))


def audit(doc: dict[str, Any]) -> dict[str, Any]:
    return get(doc, "kubernetes.audit") or {}


def user_of(doc: dict[str, Any]) -> str:
    return get(doc, "user.name") or get(doc, "kubernetes.audit.user.username") or "(unknown)"


def identity_kind(user: str) -> str:
    if user.startswith("system:serviceaccount:"):
        return "service account"
    if user.startswith("system:") or user == "(unknown)":
        return "system"
    return "human"


# Stages of one API request, in the order kube-apiserver logs them.
STAGES: Final = {"RequestReceived": 0, "ResponseStarted": 1, "ResponseComplete": 2, "Panic": 3}


def request_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What every stage of one API request repeats. auditID alone is not enough: records that
    share one but name another user, verb or URI (edited or merged logs, such as the Falco
    traces in samples/) are other requests, and a report must not drop them."""
    record = audit(doc)
    if not record.get("auditID"):
        return (get(doc, "event.id"),)
    return (record["auditID"], get(record, "user.username"), record.get("verb"),
            record.get("requestURI"))


def unique_requests(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One document per API request, in the order of `docs`: long-running requests are logged
    at ResponseStarted and ResponseComplete, both at the request's @timestamp. The earliest
    stage is kept (where a session started, and its answer then: 101 for an exec), and among
    equal stages the first in `docs` (Source.docs breaks ties by id, not by store)."""
    chosen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for doc in docs:
        key = request_key(doc)
        if key not in chosen or _stage(doc) < _stage(chosen[key]):
            chosen[key] = doc
    kept = {id(doc) for doc in chosen.values()}
    return [doc for doc in docs if id(doc) in kept]


def _stage(doc: dict[str, Any]) -> int:
    stage = audit(doc).get("stage")
    return STAGES.get(stage, len(STAGES)) if isinstance(stage, str) else len(STAGES)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec a create or update carries (a Pod's, or a workload's template)."""
    obj = audit(doc).get("requestObject")
    if not isinstance(obj, dict) or obj.get("kind") not in WORKLOAD_KINDS:
        return None
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = get(spec, "jobTemplate.spec") or {}
    if obj["kind"] != "Pod":
        spec = get(spec, "template.spec") or {}
    return spec if isinstance(spec, dict) else None


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from (c for c in spec.get(key) or () if isinstance(c, dict))


def host_access(spec: dict[str, Any]) -> list[str]:
    """Why a pod spec reaches into its node: privileged containers, host namespaces, hostPath."""
    found = [f"{key}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    found += [f"privileged container {c.get('name')}" for c in containers(spec)
              if get(c, "securityContext.privileged")]
    found += [f"hostPath {get(v, 'hostPath.path')}" for v in spec.get("volumes") or ()
              if isinstance(v, dict) and v.get("hostPath")]
    return found


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        return self.digest is not None


def parse_image(ref: str) -> ImageRef:
    """Docker's reference rules: the first component is a registry when it has a dot or a
    port or is localhost; otherwise the image is on Docker Hub."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name
    repository, _, tag = path.rpartition(":") if ":" in path else (path, "", "")
    return ImageRef(registry, repository, tag or (None if digest else "latest"), digest or None)
