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
a rule it needs is. The logic is detectors.condition_logic, the search detectors.request_space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Sequence

from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule

from detectors.audit_policy import AuditPolicy, Decision, decide
from detectors.condition_logic import (
    LEVEL_FIELDS,
    RESPONSE_FIELDS,
    Evaluation,
    Leaf,
    Node,
    Truth,
    conditions_truth,
    convert,
    leaves,
)
from detectors.field_mapping import ALLOW_LISTS, NO_VALUE, containertrail_pipeline, datasets_of
from detectors.request_space import RequestSpace, describe, to_request
from detectors.sigma_rules import parse_file, readable_documents, rule_files

AUDIT_DATASET: Final = "kubernetes.audit"


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


def condition_truth(rule: AuditRule, request: dict[str, Any], decision: Decision | None,
                    ) -> Truth:
    return conditions_truth(rule.conditions, request, decision)


def finding(rule: AuditRule, policy: AuditPolicy) -> Finding | None:
    """Why `policy` can never feed `rule`, or None when some request it records can."""
    space = RequestSpace(rule.conditions, policy)
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
    fields = sorted({leaf.field for tree in rule.conditions for leaf in leaves(tree)
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


def unfed_rules(rules: Sequence[AuditRule], policy: AuditPolicy) -> list[Finding]:
    return [f for f in (finding(rule, policy) for rule in rules) if f is not None]


def unfed_correlations(paths: Sequence[Path], unfed: Sequence[Finding]) -> list[Finding]:
    """Correlation rules that need a rule in `unfed`: every rule of a temporal correlation,
    the one rule of a count."""
    missing = {f.rule for f in unfed}
    found = []
    for path in rule_files(paths):
        for doc in readable_documents(path):  # `ctrail rules validate` reports broken files
            correlation = doc.get("correlation") if isinstance(doc, dict) else None
            if not isinstance(correlation, dict):
                continue
            needs = [str(r) for r in correlation.get("rules") or () if str(r) in missing]
            if needs:
                found.append(Finding(str(doc.get("name") or doc.get("id")), path,
                                     f"it needs {', '.join(needs)}, which the policy never "
                                     "feeds"))
    return found
