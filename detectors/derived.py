"""Derived fields: values a rule needs that Sigma cannot compute from one event's fields.

A Sigma value test looks at one field at a time, and a list field matches when any element
does. Some catalog rules need more: the same test over every pod spec a workload may carry
(a Pod's `spec`, a Deployment's `spec.template.spec`, a CronJob's
`spec.jobTemplate.spec.template.spec`), a decision that combines a container's and its pod's
securityContext, or what the registry saw before (a tag pointing at another digest). Each is a
small function here, named in rules as a `derived.` field:

- `derived.k8s.pod_specs`: every pod spec in the request object (then `.hostNetwork`,
  `.volumes.hostPath.path`, ... are read inside them)
- `derived.k8s.containers`: every container, init container and ephemeral container of those
  specs (then `.securityContext.privileged`, `.image`, ...)
- `derived.k8s.root_containers`: names of containers that may run as root: runAsUser 0, or
  neither runAsNonRoot true nor a non-zero runAsUser at container or pod level (CT-K8S-012)
- `derived.k8s.untrusted_image_registries`: registries of the containers' images that are not in
  detection.trusted_registries; empty when no trusted registry is configured (CT-K8S-013)
- `derived.container.unknown_provenance_digests`: the image digest a container runs (the first
  sha256 digest of container.image.hash.all, the one the entity graph looked up) when its
  provenance is unknown: no push of it is known (containertrail.image_pushed_by absent), or its
  image is named from a registry outside detection.trusted_registries; empty when no trusted
  registry is configured (CT-COR-005)
- `derived.k8s.human_subjects`: names of the User subjects of a binding that are not `system:*`
- `derived.k8s.configmap_entries`: a ConfigMap's `data` as `key=value` texts (CT-K8S-022)
- `derived.k8s.namespace_outside_own`: for a request by a service account
  (system:serviceaccount:NS:NAME), the namespace it acts in when that is not NS, or `*` for a
  request across all namespaces (CT-NEW-002)
- `derived.k8s.admitted_image_digests`: for a pod the API server stored, the image digests an
  admission controller verified: Kyverno's verifyImages writes `kyverno.io/verify-images` on the
  admitted object, a JSON object of `image@digest` to "pass" (true in Kyverno before 1.9), seen
  in the audit event's responseObject (requestObject is the object before admission) (CT-COR-009)
- `derived.registry.previous_digest`: for a push of repository:tag, the digest the tag pointed
  at before when it differs (CT-REG-002); filled by the detector's TagHistory, which is state

They are computed only when a rule reads them, once per event (detectors.matcher.EventView).
They exist in the matcher only: a search backend converting these rules cannot evaluate them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Final

import orjson

from ctrail.event import Event

DERIVED_PREFIX: Final = "derived."
DEFAULT_REGISTRY: Final = "docker.io"
CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")
# Where each resource keeps its pod spec, below the request object.
POD_SPEC_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "pods": ("spec",), "podtemplates": ("template", "spec"),
    "deployments": ("spec", "template", "spec"), "daemonsets": ("spec", "template", "spec"),
    "statefulsets": ("spec", "template", "spec"), "replicasets": ("spec", "template", "spec"),
    "replicationcontrollers": ("spec", "template", "spec"), "jobs": ("spec", "template", "spec"),
    "cronjobs": ("spec", "jobTemplate", "spec", "template", "spec"),
}


@dataclass(frozen=True, slots=True)
class DerivedContext:
    """The configuration derived fields read (SigmaDetectorConfig)."""

    trusted_registries: frozenset[str] = frozenset()


DerivedFunction = Callable[[Event, "dict[str, Any] | None", DerivedContext], list[Any]]


def _dig(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def pod_specs(event: Event, audit: dict[str, Any] | None, ctx: DerivedContext) -> list[Any]:
    if not audit:
        return []
    ref = audit.get("objectRef")
    resource = ref.get("resource") if isinstance(ref, dict) else None
    path = POD_SPEC_PATHS.get(resource) if isinstance(resource, str) else None
    spec = _dig(audit.get("requestObject"), path) if path else None
    return [spec] if isinstance(spec, dict) else []


def containers(event: Event, audit: dict[str, Any] | None, ctx: DerivedContext) -> list[Any]:
    return [container for _, container in _pod_containers(pod_specs(event, audit, ctx))]


def _pod_containers(specs: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(spec, c) for spec in specs for key in CONTAINER_LISTS
            if isinstance(spec.get(key), list) for c in spec[key] if isinstance(c, dict)]


def root_containers(event: Event, audit: dict[str, Any] | None,
                    ctx: DerivedContext) -> list[Any]:
    """A container's own securityContext wins over its pod's, field by field (Kubernetes)."""
    found = []
    for spec, container in _pod_containers(pod_specs(event, audit, ctx)):
        own = container.get("securityContext") or {}
        pod = spec.get("securityContext") or {}
        if not isinstance(own, dict) or not isinstance(pod, dict):
            continue
        user = own.get("runAsUser", pod.get("runAsUser"))
        non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot"))
        uid = user if isinstance(user, int) and not isinstance(user, bool) else None
        if uid == 0 or not ((uid is not None and uid > 0) or non_root is True):
            found.append(str(container.get("name") or "?"))
    return found


def image_registry(image: str) -> str:
    """The registry host of an image reference: the first path component when it looks like a
    host (has a dot or a port, or is localhost), else Docker Hub, as the container runtime
    resolves it."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return DEFAULT_REGISTRY


def untrusted_image_registries(event: Event, audit: dict[str, Any] | None,
                               ctx: DerivedContext) -> list[Any]:
    if not ctx.trusted_registries:
        return []
    registries = {image_registry(c["image"]) for c in containers(event, audit, ctx)
                  if isinstance(c.get("image"), str)}
    return sorted(registries - ctx.trusted_registries)


def unknown_provenance_digests(event: Event, audit: dict[str, Any] | None,
                               ctx: DerivedContext) -> list[Any]:
    """The graph records a push by digest (who, when, from where) but not the registry host,
    so "pushed to a trusted registry" is read as: a push of the digest is known and the image
    reference names a trusted registry host."""
    image = event.container.image if event.container is not None else None
    if not ctx.trusted_registries or image is None or image.hash is None:
        return []
    digests = [d for d in image.hash.all if d.startswith("sha256:")]
    if not digests:
        return []
    trail = event.containertrail
    pushed = trail is not None and trail.image_pushed_by is not None
    if pushed and image.name and image_registry(image.name) in ctx.trusted_registries:
        return []
    return digests[:1]


def human_subjects(event: Event, audit: dict[str, Any] | None, ctx: DerivedContext) -> list[Any]:
    subjects = _dig(audit, ("requestObject", "subjects"))
    return [s["name"] for s in subjects or () if isinstance(s, dict) and s.get("kind") == "User"
            and isinstance(s.get("name"), str) and not s["name"].startswith("system:")] \
        if isinstance(subjects, list) else []


def configmap_entries(event: Event, audit: dict[str, Any] | None,
                      ctx: DerivedContext) -> list[Any]:
    data = _dig(audit, ("requestObject", "data"))
    return [f"{k}={v}" for k, v in data.items() if isinstance(v, str)] \
        if isinstance(data, dict) else []


def namespace_outside_own(event: Event, audit: dict[str, Any] | None,
                          ctx: DerivedContext) -> list[Any]:
    user = _dig(audit, ("user", "username"))
    if not isinstance(user, str) or not user.startswith(SERVICE_ACCOUNT_PREFIX):
        return []
    own = user[len(SERVICE_ACCOUNT_PREFIX):].split(":", 1)[0]
    namespace = _dig(audit, ("objectRef", "namespace")) or "*"
    return [namespace] if isinstance(namespace, str) and namespace != own else []


def admitted_image_digests(event: Event, audit: dict[str, Any] | None,
                           ctx: DerivedContext) -> list[Any]:
    raw = _dig(audit, ("responseObject", "metadata", "annotations", VERIFY_IMAGES))
    try:
        verdicts = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        return []
    if not isinstance(verdicts, dict):
        return []
    return [image.rsplit("@", 1)[1] for image, verdict in verdicts.items()
            if verdict in ("pass", True) and "@sha256:" in image]


def preset_only(event: Event, audit: dict[str, Any] | None, ctx: DerivedContext) -> list[Any]:
    """A field the detector fills in before matching (state); absent otherwise."""
    return []


PREVIOUS_DIGEST: Final = "derived.registry.previous_digest"
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
VERIFY_IMAGES: Final = "kyverno.io/verify-images"
DERIVED: Final[dict[str, DerivedFunction]] = {
    "derived.k8s.pod_specs": pod_specs,
    "derived.k8s.containers": containers,
    "derived.k8s.root_containers": root_containers,
    "derived.k8s.untrusted_image_registries": untrusted_image_registries,
    "derived.k8s.human_subjects": human_subjects,
    "derived.container.unknown_provenance_digests": unknown_provenance_digests,
    "derived.k8s.configmap_entries": configmap_entries,
    "derived.k8s.namespace_outside_own": namespace_outside_own,
    "derived.k8s.admitted_image_digests": admitted_image_digests,
    PREVIOUS_DIGEST: preset_only,
}


def split_derived(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(derived base field, path below it) for a `derived.` field name; None for other fields.
    Raises KeyError for a `derived.` name no function computes."""
    if not name.startswith(DERIVED_PREFIX):
        return None
    for base in sorted(DERIVED, key=len, reverse=True):
        if name == base or name.startswith(base + "."):
            rest = name[len(base) + 1:]
            return base, tuple(rest.split(".")) if rest else ()
    raise KeyError(name)


class TagHistory:
    """The digest each registry repository:tag was last pushed with, to see a tag overwritten.

    In memory and bounded (least recently pushed tags are forgotten first), so after a restart
    or eviction the first push of a tag is not compared with anything."""

    def __init__(self, max_tags: int = 100_000) -> None:
        self.max_tags = max_tags
        self.digests: OrderedDict[str, str] = OrderedDict()

    def observe(self, event: Event) -> dict[str, list[Any]]:
        """The derived values this event gets ({} or {PREVIOUS_DIGEST: [digest]}), and the push
        recorded. Only pushes of a tagged manifest count: blob layers share no tag."""
        reg = event.registry
        if (reg is None or event.event.action != "push" or not reg.tag or not reg.digest
                or (reg.media_type is not None and "manifest" not in reg.media_type
                    and "image.index" not in reg.media_type)):
            return {}
        key = f"{reg.host or reg.instance or ''}/{reg.repository}:{reg.tag}"
        before = self.digests.pop(key, None)
        self.digests[key] = reg.digest
        if len(self.digests) > self.max_tags:
            self.digests.popitem(last=False)
        return {PREVIOUS_DIGEST: [before]} if before is not None and before != reg.digest else {}
