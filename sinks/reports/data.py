"""What the report builders read: documents from the Store protocol (so SQLite and Elasticsearch
answer alike), and pure helpers over ECS documents (pod specs, image references, identities)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from ctrail.components import Store

RBAC_RESOURCES = "(roles OR clusterroles OR rolebindings OR clusterrolebindings)"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
WORKLOAD_KINDS = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                            "CronJob"})


@dataclass
class Source:
    """A store and a period; records which queries hit `max_rows` so the report can say so."""

    store: Store
    time_from: datetime
    time_to: datetime
    max_rows: int
    truncated: list[str] = field(default_factory=list)

    def docs(self, query: str, kind: str = "events") -> list[dict[str, Any]]:
        found = self.store.search(query, kind, self.time_from, self.time_to, self.max_rows)
        if len(found) >= self.max_rows:
            self.truncated.append(query)
        return found

    def count(self, query: str, kind: str = "events") -> int:
        return self.store.count(query, kind, self.time_from, self.time_to)


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


def unique_requests(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One document per API request: long-running requests are logged at ResponseStarted and
    ResponseComplete under one auditID."""
    seen: set[str] = set()
    out = []
    for doc in docs:
        key = audit(doc).get("auditID") or get(doc, "event.id")
        if key not in seen:
            seen.add(key)
            out.append(doc)
    return out


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
