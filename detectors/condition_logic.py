"""A rule's condition in three-valued logic (true, false, unknown) over one request and what
an audit policy records of it: the engine of `ctrail rules lint --audit-policy`
(detectors.policy_coverage).

- The request's own attributes (verb, objectRef resource, subresource, apiGroup, namespace and
  name, user name and groups) are known values, or unknown while the search has not fixed them.
- Fields the level decides: requestObject and the derived.k8s fields computed from it need
  Request, responseObject needs RequestResponse, responseStatus needs a response stage that the
  policy's omitStages keep. A field the policy leaves out is absent, as it would be in the
  event (an absent field fails a value test and passes a `null` test).
- Every other field is unknown: it may have any value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Final, Iterator

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
)
from sigma.types import SigmaExists, SigmaNull, SigmaString

from detectors.audit_policy import Decision, Level
from detectors.values import RuleCompileError, value_test

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


def leaves(node: Node | Leaf) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    else:
        for arg in node.args:
            yield from leaves(arg)


def conditions_truth(conditions: tuple[Node | Leaf, ...], request: dict[str, Any],
                     decision: Decision | None) -> Truth:
    """The truth of a rule (any of its conditions) on `request`; `decision`: what the policy
    records of it, None to leave the level-decided fields unknown."""
    evaluation = Evaluation(request, decision)
    truths = [evaluation.truth(tree) for tree in conditions]
    return True if True in truths else (None if None in truths else False)
