"""Which audit rules a kube-apiserver audit Policy can never feed (`ctrail rules lint
--audit-policy`).

A rule is fed when some request it is about is recorded at a level that keeps the fields it
reads. That is decided without events, over the rule's condition (after our field mapping) in
three-valued logic (true, false, unknown):

- The request's own attributes (verb, objectRef resource, subresource, apiGroup, namespace and
  name, user name and groups, the path of a non-resource request) are enumerated: every value
  the rule or the policy names, plus one value that neither names, so every way the policy's
  first-match rules can split requests is tried. A condition false on them prunes the search.
- Fields the level decides: requestObject and the derived.k8s fields computed from it need
  Request, responseObject needs RequestResponse, responseStatus needs a response stage that the
  policy's omitStages keep. A field the policy leaves out is absent, as it would be in the
  event (an absent field fails a value test and passes a `null` test).
- Every other field is unknown: it may have any value.

A rule is reported when its condition is false for every request the policy records. The
answer leans to silence: a value no rule or policy names stands for every other value, so a
rule is never reported when some request could still feed it. A correlation is reported when
a rule it needs is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Final, Iterator, Sequence

import yaml
from sigma.collection import SigmaCollection
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
)
from sigma.rule import SigmaRule
from sigma.types import SigmaExists, SigmaNull, SigmaString

from detectors.audit_policy import AuditPolicy, Decision, Level, Request, decide
from detectors.field_mapping import ALLOW_LISTS, NO_VALUE, containertrail_pipeline, datasets_of
from detectors.sigma_rules import parse_file, rule_documents, rule_files
from detectors.values import RuleCompileError, value_test

AUDIT_DATASET: Final = "kubernetes.audit"
OTHER: Final = "ctrail-lint-other"          # a value neither the rule nor the policy names
# The request attributes, by the event fields (after the field mapping) that hold them.
ATTRIBUTES: Final = {
    "kubernetes.audit.verb": "verb",
    "kubernetes.audit.objectRef.resource": "resource",
    "kubernetes.audit.objectRef.subresource": "subresource",
    "kubernetes.audit.objectRef.apiGroup": "api_group",
    "kubernetes.audit.objectRef.namespace": "namespace",
    "kubernetes.namespace": "namespace",
    "kubernetes.audit.objectRef.name": "name",
    "kubernetes.audit.user.username": "user",
    "user.name": "user",
    "kubernetes.audit.user.groups": "groups",
}
OBJECT_REF: Final = frozenset({"subresource", "api_group", "namespace", "name"})
# Fields a level gives, by prefix: the least level that records them.
# The derived fields computed from the request body (detectors.derived); the others read
# metadata only.
LEVEL_FIELDS: Final = (("kubernetes.audit.requestObject", Level.REQUEST),
                       *((f"derived.k8s.{name}", Level.REQUEST) for name in (
                           "pod_specs", "containers", "root_containers",
                           "untrusted_image_registries", "human_subjects",
                           "configmap_entries")),
                       ("kubernetes.audit.responseObject", Level.REQUEST_RESPONSE))
RESPONSE_FIELDS: Final = "kubernetes.audit.responseStatus"
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

Truth = bool | None                         # None: unknown


@dataclass(frozen=True, slots=True)
class Leaf:
    field: str
    test: Callable[[Any], bool] | None      # None: a test the lint cannot run (unknown)
    null: bool = False                       # `field: null`
    exists: bool | None = None               # `field|exists: true/false`
    sample: str | None = None                # a value that passes a string test


@dataclass(frozen=True, slots=True)
class Node:
    op: str                                  # and, or, not
    args: tuple[Node | Leaf, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule the policy can never feed, and why."""

    rule: str
    path: Path | None
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}" + (f" ({self.path})" if self.path else "")


@dataclass(frozen=True, slots=True)
class AuditRule:
    id: str
    path: Path | None
    conditions: tuple[Node | Leaf, ...]


def audit_rules(paths: Sequence[Path], variables: dict[str, list[str]] | None = None,
                ) -> list[AuditRule]:
    """The Kubernetes audit rules under `paths`, with their conditions after the field mapping.
    Broken rules are left to `ctrail rules validate`. An allow list left empty (its rule is
    off) is taken as configured and allowing nobody: whether the policy would feed the rule
    once it is on is what the lint can tell."""
    collections = [c for c in (parse_file(path)[0] for path in rule_files(paths)) if c]
    pipeline = containertrail_pipeline({**{name: [NO_VALUE] for name in ALLOW_LISTS},
                                        **{k: v for k, v in (variables or {}).items() if v}})
    found = []
    for rule in SigmaCollection.merge(collections).rules:
        if not isinstance(rule, SigmaRule) or AUDIT_DATASET not in datasets_of(rule.logsource):
            continue
        pipeline.apply(rule)
        trees = tuple(convert(c.parsed) for c in rule.detection.parsed_condition)
        found.append(AuditRule(rule.name or str(rule.id),
                               rule.source.path if rule.source else None, trees))
    return found


def convert(node: Any) -> Node | Leaf:
    if isinstance(node, ConditionAND):
        return Node("and", tuple(convert(a) for a in node.args))
    if isinstance(node, ConditionOR):
        return Node("or", tuple(convert(a) for a in node.args))
    if isinstance(node, ConditionNOT):
        return Node("not", (convert(node.args[0]),))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = node.value
        if isinstance(value, SigmaNull):
            return Leaf(node.field, None, null=True)
        if isinstance(value, SigmaExists):
            return Leaf(node.field, None, exists=bool(value))
        try:
            test = value_test(value)
        except RuleCompileError:
            test = None
        return Leaf(node.field, test, sample=_sample(value))
    return Leaf("", None)                    # a keyword: unknown


def _sample(value: Any) -> str | None:
    if not isinstance(value, SigmaString):
        return None
    # A wildcard (or placeholder) stands for "x": `system:*` gives `system:x`.
    return "".join(p if isinstance(p, str) else "x" for p in value.s)


class Evaluation:
    """The rule's condition on one (partial) request, at one decision or before any."""

    def __init__(self, request: dict[str, Any], decision: Decision | None) -> None:
        self.request = request
        self.decision = decision

    def truth(self, node: Node | Leaf) -> Truth:
        if isinstance(node, Leaf):
            return self.leaf(node)
        values = [self.truth(a) for a in node.args]
        if node.op == "not":
            return None if values[0] is None else not values[0]
        if node.op == "and":
            return False if False in values else (None if None in values else True)
        return True if True in values else (None if None in values else False)

    def leaf(self, leaf: Leaf) -> Truth:
        attribute = ATTRIBUTES.get(leaf.field)
        if attribute is not None:
            if attribute not in self.request:
                return None
            value = self.request[attribute]
            if attribute in OBJECT_REF and self.request.get("resource") is None:
                value = None                 # a non-resource request has no objectRef
            return _test(leaf, value)
        if self.decision is not None and not self.recorded(leaf.field):
            return _test(leaf, None)
        return None

    def recorded(self, field: str) -> bool:
        assert self.decision is not None
        if field.startswith(RESPONSE_FIELDS):
            return self.decision.with_response
        return all(self.decision.level >= level for prefix, level in LEVEL_FIELDS
                   if field.startswith(prefix))


def _test(leaf: Leaf, value: Any) -> Truth:
    values = [v for v in (value if isinstance(value, tuple) else (value,)) if v is not None]
    if leaf.null:
        return not values
    if leaf.exists is not None:
        return bool(values) is leaf.exists
    if not values:
        return False
    if leaf.test is None:
        return None
    return any(leaf.test(v) for v in values)


def condition_truth(rule: AuditRule, request: dict[str, Any], decision: Decision | None,
                    ) -> Truth:
    evaluation = Evaluation(request, decision)
    truths = [evaluation.truth(tree) for tree in rule.conditions]
    return True if True in truths else (None if None in truths else False)


def finding(rule: AuditRule, policy: AuditPolicy) -> Finding | None:
    """Why `policy` can never feed `rule`, or None when some request it records can."""
    space = RequestSpace(rule, policy)
    best: tuple[Decision, dict[str, Any]] | None = None
    for request in space.requests():
        decision = decide(policy, to_request(request))
        if decision.recorded and condition_truth(rule, request, decision) is not False:
            return None
        if decision.recorded and (best is None or decision.level > best[0].level):
            best = (decision, request)
    if best is None:
        return Finding(rule.id, rule.path, "the policy records none of the requests it is "
                       "about (level None)")
    decision, example = best
    needs = needed_fields(rule, decision)
    return Finding(rule.id, rule.path, f"it reads {needs}, but the policy records the requests "
                   f"it is about at {decision.level.word} at most (e.g. {describe(example)}, "
                   f"stages {', '.join(sorted(decision.stages))})")


def needed_fields(rule: AuditRule, decision: Decision) -> str:
    """The fields of the rule that `decision` leaves out, with what would record them."""
    left_out = Evaluation({}, decision)
    fields = sorted({leaf.field for tree in rule.conditions for leaf in _leaves(tree)
                     if (leaf.field.startswith(RESPONSE_FIELDS)
                         or any(leaf.field.startswith(p) for p, _ in LEVEL_FIELDS))
                     and not left_out.recorded(leaf.field)})
    by_need: dict[str, list[str]] = {}
    for field in fields:
        level = max((lvl for p, lvl in LEVEL_FIELDS if field.startswith(p)), default=None)
        need = f"level {level.word}" if level else "a response stage"
        by_need.setdefault(need, []).append(field.removeprefix("kubernetes.audit."))
    return "; ".join(f"{', '.join(names)} (needs {need})" for need, names in by_need.items()
                     ) or "fields the policy leaves out"


def _leaves(node: Node | Leaf) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    else:
        for arg in node.args:
            yield from _leaves(arg)


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

    def __init__(self, rule: AuditRule, policy: AuditPolicy) -> None:
        self.rule = rule
        named = self._rule_values(rule)
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
    def _rule_values(rule: AuditRule) -> dict[str, set[Any]]:
        named: dict[str, set[Any]] = {key: set() for key in (*set(ATTRIBUTES.values()), "path")}
        for tree in rule.conditions:
            for leaf in _leaves(tree):
                key = ATTRIBUTES.get(leaf.field) or (
                    "path" if leaf.field == "kubernetes.audit.requestURI" else None)
                if key is not None and leaf.sample is not None:
                    named[key].add(leaf.sample)
        return named

    def requests(self) -> Iterator[dict[str, Any]]:
        yield from self._visit(0, {})

    def _visit(self, depth: int, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if condition_truth(self.rule, request, None) is False:
            return
        if depth == len(self.order):
            yield request
            return
        key, values = self.order[depth]
        for value in values(request):
            yield from self._visit(depth + 1, {**request, key: value})


def unfed_rules(rules: Sequence[AuditRule], policy: AuditPolicy) -> list[Finding]:
    return [f for f in (finding(rule, policy) for rule in rules) if f is not None]


def unfed_correlations(paths: Sequence[Path], unfed: Sequence[Finding]) -> list[Finding]:
    """Correlation rules that need a rule in `unfed`: every rule of a temporal correlation,
    the one rule of a count."""
    missing = {f.rule for f in unfed}
    found = []
    for path in rule_files(paths):
        try:
            documents = rule_documents(path)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue                          # `ctrail rules validate` reports broken files
        for doc in documents:
            correlation = doc.get("correlation") if isinstance(doc, dict) else None
            if not isinstance(correlation, dict):
                continue
            needs = [str(r) for r in correlation.get("rules") or () if str(r) in missing]
            if needs:
                found.append(Finding(str(doc.get("name") or doc.get("id")), path,
                                     f"it needs {', '.join(needs)}, which the policy never "
                                     "feeds"))
    return found

