"""Audit rules that can never match what kube-apiserver emits, and why.

A Sigma rule may test a field an audit.k8s.io Event does not have at its top level (SigmaHQ's
hostPath and Privileged Container rules test `hostPath` and `capabilities`, which live deep in
requestObject; two test `apiGroup`, which is objectRef.apiGroup) or a value its field can never
hold (`responseStatus.code: ALLOW`: the code is an HTTP status). pySigma loads such a rule and
it never fires: `ctrail rules validate` says so instead (cli.rules).

The condition is read as the lint reads it (detectors.condition_logic, after our field mapping):
an AND fails if any part can never match, an OR only if every part can never match; a NOT, and a
test for a field's absence (`field: null`, `|exists: false`), may always match.
"""

from __future__ import annotations

from typing import Final

from detectors.condition_logic import Leaf, Node
from detectors.policy_coverage import AuditRule

AUDIT_PREFIX: Final = "kubernetes.audit."
# The top-level fields of an audit.k8s.io Event (v1 and v1beta1), and what our parser keeps of
# managed clusters' envelopes (AKS metadata, GKE's monitored resource).
AUDIT_EVENT_FIELDS: Final = frozenset({
    "kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user",
    "impersonatedUser", "sourceIPs", "userAgent", "objectRef", "responseStatus",
    "requestObject", "responseObject", "requestReceivedTimestamp", "stageTimestamp",
    "annotations", "metadata", "timestamp", "aks_metadata", "resource"})
STATUS_CODE: Final = AUDIT_PREFIX + "responseStatus.code"
HTTP_STATUSES: Final = range(100, 600)


def never_matching(rule: AuditRule) -> list[str]:
    """Why no audit event can match `rule` (empty when some may)."""
    reasons: list[str] = []
    if rule.conditions and all(_never(tree, reasons) for tree in rule.conditions):
        return list(dict.fromkeys(reasons))
    return []


def _never(node: Node | Leaf, reasons: list[str]) -> bool:
    if isinstance(node, Leaf):
        reason = _leaf_reason(node)
        if reason is not None:
            reasons.append(reason)
        return reason is not None
    if node.op == "and":
        return any([_never(arg, reasons) for arg in node.args])    # every reason, not the first
    if node.op == "or":
        found: list[str] = []
        if all(_never(arg, found) for arg in node.args):
            reasons.extend(found)
            return True
    return False


def _leaf_reason(leaf: Leaf) -> str | None:
    if leaf.null or leaf.exists is False or not leaf.field.startswith(AUDIT_PREFIX):
        return None
    name = leaf.field.removeprefix(AUDIT_PREFIX)
    top = name.split(".", 1)[0]
    if top not in AUDIT_EVENT_FIELDS:
        return (f"it tests `{name}`, which an audit event does not have at its top level "
                "(pod specs are under requestObject, the API group under objectRef.apiGroup)")
    if leaf.field == STATUS_CODE and leaf.test is not None and \
            not any(leaf.test(code) for code in HTTP_STATUSES):
        return f"it tests responseStatus.code, an HTTP status, for {leaf.sample!r}"
    return None
