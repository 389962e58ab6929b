"""The requests a lint tries: every value the rule or the policy names for each attribute a
policy rule can match on, plus one value that neither names (it stands for all the others), so
every way the policy's first-match rules can split requests is tried. Searched depth first,
pruned where the rule's condition is already false.
"""

from __future__ import annotations

from typing import Any, Callable, Final, Iterator

from detectors.audit_policy import AuditPolicy, Request
from detectors.condition_logic import ATTRIBUTES, Leaf, Node, conditions_truth, leaves

OTHER: Final = "ctrail-lint-other"          # a value neither the rule nor the policy names
# The API groups of the built-in resources our rules name (a policy's resources are per group).
BUILTIN_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    **{r: ("",) for r in ("pods", "secrets", "configmaps", "services", "serviceaccounts",
                          "nodes", "namespaces", "endpoints", "persistentvolumes",
                          "persistentvolumeclaims", "replicationcontrollers", "podtemplates")},
    "events": ("", "events.k8s.io"),
    **{r: ("apps",) for r in ("deployments", "daemonsets", "statefulsets", "replicasets")},
    **{r: ("batch",) for r in ("jobs", "cronjobs")},
    **{r: ("rbac.authorization.k8s.io",)
       for r in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")},
    **{r: ("networking.k8s.io",) for r in ("networkpolicies", "ingresses")},
    **{r: ("admissionregistration.k8s.io",)
       for r in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")},
    "certificatesigningrequests": ("certificates.k8s.io",),
    "tokenreviews": ("authentication.k8s.io",),
}
# Their subresources (Kubernetes 1.34 discovery); a built-in resource has no others.
BUILTIN_SUBRESOURCES: Final[dict[str, tuple[str, ...]]] = {
    "pods": ("attach", "binding", "ephemeralcontainers", "eviction", "exec", "log",
             "portforward", "proxy", "resize", "status"),
    "nodes": ("proxy", "status"), "services": ("proxy", "status"),
    "serviceaccounts": ("token",), "namespaces": ("finalize", "status"),
    "persistentvolumes": ("status",), "persistentvolumeclaims": ("status",),
    "replicationcontrollers": ("scale", "status"),
    **{r: ("scale", "status") for r in ("deployments", "statefulsets", "replicasets")},
    **{r: ("status",) for r in ("daemonsets", "jobs", "cronjobs", "networkpolicies",
                                "ingresses")},
    "certificatesigningrequests": ("approval", "status"),
}


def describe(request: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return "*" if value == OTHER else str(value)
    if request.get("resource") is None:
        return f"{shown(request['verb'])} {shown(request['path'])}"
    target = request["resource"] + (f"/{request['subresource']}" if request["subresource"]
                                    else "")
    return f"{shown(request['verb'])} {shown(target)}"


def to_request(values: dict[str, Any]) -> Request:
    return Request(verb=values["verb"], user=values["user"], groups=values["groups"],
                   resource=values["resource"], subresource=values["subresource"],
                   api_group=values["api_group"], namespace=values["namespace"],
                   name=values["name"], path=values["path"])


class RequestSpace:
    """Requests that differ wherever the rule or the policy tells requests apart, searched
    depth first, pruned where the rule's condition is already false."""

    def __init__(self, conditions: tuple[Node | Leaf, ...], policy: AuditPolicy) -> None:
        self.conditions = conditions
        named = self._rule_values(conditions)
        groups = [g for r in policy.rules for g in r.resources]
        specs = [spec for g in groups for spec in g.resources]
        self.named = {
            "resource": named["resource"] | {s.split("/")[0] for s in specs} - {"*"},
            "subresource": named["subresource"]
            | {s.split("/", 1)[1] for s in specs if "/" in s} - {"*"},
            "api_group": named["api_group"] | {g.group for g in groups} - {"*"},
            "verb": named["verb"] | {v for r in policy.rules for v in r.verbs},
            "namespace": named["namespace"] | {n for r in policy.rules for n in r.namespaces},
            "name": named["name"] | {n for g in groups for n in g.resource_names},
            "user": named["user"] | {u for r in policy.rules for u in r.users},
            "groups": named["groups"] | {u for r in policy.rules for u in r.user_groups},
            "path": named["path"] | {u.rstrip("*") or "/" for r in policy.rules
                                     for u in r.non_resource_urls},
        }
        self.order: list[tuple[str, Callable[[dict[str, Any]], list[Any]]]] = [
            ("resource", lambda r: [*sorted(self.named["resource"]), OTHER, None]),
            ("verb", lambda r: [*sorted(self.named["verb"]), OTHER]),
            ("subresource", self._subresources_of),
            ("api_group", self._groups_of),
            ("namespace", self._per_resource("namespace", [None, OTHER])),
            ("name", self._per_resource("name", [OTHER])),
            ("user", lambda r: [*sorted(self.named["user"]), OTHER]),
            ("groups", lambda r: [(g,) for g in sorted(self.named["groups"])] + [(OTHER,)]),
            ("path", lambda r: ([*sorted(self.named["path"]), "/" + OTHER]
                                if r["resource"] is None else [""])),
        ]

    def _per_resource(self, key: str, extra: list[Any]) -> Callable[[dict[str, Any]], list[Any]]:
        return lambda r: [None] if r["resource"] is None else [*sorted(self.named[key]), *extra]

    def _subresources_of(self, request: dict[str, Any]) -> list[str | None]:
        resource = request["resource"]
        if resource is None:
            return [None]
        if resource in BUILTIN_GROUPS:
            return [None, *BUILTIN_SUBRESOURCES.get(resource, ())]
        return [None, *sorted(self.named["subresource"]), OTHER]

    def _groups_of(self, request: dict[str, Any]) -> list[str]:
        resource = request["resource"]
        if resource is None:
            return [""]
        return list(BUILTIN_GROUPS.get(resource, (*sorted(self.named["api_group"]), OTHER)))

    @staticmethod
    def _rule_values(conditions: tuple[Node | Leaf, ...]) -> dict[str, set[Any]]:
        named: dict[str, set[Any]] = {key: set() for key in (*set(ATTRIBUTES.values()), "path")}
        for tree in conditions:
            for leaf in leaves(tree):
                key = ATTRIBUTES.get(leaf.field) or (
                    "path" if leaf.field == "kubernetes.audit.requestURI" else None)
                if key is not None and leaf.sample is not None:
                    named[key].add(leaf.sample)
        return named

    def requests(self) -> Iterator[dict[str, Any]]:
        yield from self._visit(0, {})

    def _visit(self, depth: int, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if conditions_truth(self.conditions, request, None) is False:
            return
        if depth == len(self.order):
            yield request
            return
        key, values = self.order[depth]
        for value in values(request):
            yield from self._visit(depth + 1, {**request, key: value})
