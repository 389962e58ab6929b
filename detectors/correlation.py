"""Sigma correlation rules (event_count, value_count, temporal, temporal_ordered) over time windows.

Loading. Correlation rules live in the same rule files as single-event rules (a correlation file
holds its base rules and the correlation, as the Sigma specification writes them) and refer to
base rules by `name`, in any loaded file: CT-COR-002 reuses CT-K8S-004. `generate: false` (the
Sigma default) makes a base rule raise no alert of its own: SigmaDetector then only feeds it to
its correlations. `gte`/`gt` conditions are decided as soon as they hold (no need to wait for the
window to end). `lt`, `lte` and `eq` (absence: "B did not follow A") can only be decided when the
window closes by event time (detectors.absence); the value_sum family and correlations of
correlations are refused with a LoadError.

Field names. `group-by` and value_count's `condition.field` name event fields as stored
(`user.name`, `kubernetes.namespace`, raw audit fields under `kubernetes.audit.`), or an alias
whose mapping names such a field per base rule (CT-COR-006 joins a binding's subject to a
reader's user name). `containertrail.subjects` is derived: the user names a binding's subjects
authenticate as (a ServiceAccount subject -> system:serviceaccount:NS:NAME).

Two halves, so the windows can sit behind a repartition (DESIGN "Detection", pipeline
`correlate` stage): `candidates` runs in the detect stage, where the whole event is at hand,
and turns a base-rule match into a small candidate keyed by correlation id and group-by values;
CorrelationEngine (detectors.window_state) holds the windows in the correlate stage.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Sequence

import orjson
from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator as Op,
    SigmaCorrelationRule,
    SigmaCorrelationType as Type,
    SigmaRuleReference,
)

from ctrail.event import Alert, AlertInfo, Severity, Threat
from detectors.attack import threat_from_tags
from detectors.matcher import EventView, FieldPath
from detectors.sigma_rules import (
    PARSE_FAILURES,
    LoadError,
    RuleSet,
    is_history_rule,
    readable_documents,
    rule_files,
    sigma_error,
)
from detectors.values import RuleCompileError

TYPES: Final = {Type.EVENT_COUNT: "event_count", Type.VALUE_COUNT: "value_count",
                Type.TEMPORAL: "temporal", Type.TEMPORAL_ORDERED: "temporal_ordered"}
SUBJECTS: Final = "containertrail.subjects"
MAX_GROUPS_PER_EVENT: Final = 16      # a binding with many subjects: bound the fan-out
# Candidate routing data rides in the candidate's tags (it is an Alert on the wire).
TAG_CORRELATION: Final = "ctrail.correlation="
TAG_GROUP: Final = "ctrail.group="
TAG_VALUE: Final = "ctrail.value="
ABSENCE_OPS: Final = {Op.LT: "lt", Op.LTE: "lte", Op.EQ: "eq"}


@dataclass(frozen=True, slots=True)
class CorrelationRule:
    id: str
    title: str
    description: str | None
    reference: str | None
    severity: Severity
    threat: Threat | None
    type: str                                   # one of TYPES' values
    rules: tuple[str, ...]                      # base rule ids, in order (temporal_ordered)
    fields: dict[str, tuple[str, ...]]          # base rule id -> a field per group-by entry
    value_fields: dict[str, str]                # value_count: base rule id -> counted field
    timespan_secs: float
    threshold: int                              # least count that fires (`gt: n` -> n + 1)
    generate: bool
    path: Path | None
    absence: str | None = None                  # lt | lte | eq: decided when the window closes

    def satisfied(self, window: Sequence[Any]) -> bool:
        """Whether entries (time-ordered, with .rule and .value) meet the condition."""
        if self.type == "event_count":
            return len(window) >= self.threshold
        if self.type == "value_count":
            return len({e.value for e in window if e.value is not None}) >= self.threshold
        if self.type == "temporal":
            return set(self.rules) <= {e.rule for e in window}
        step = 0
        for entry in window:
            if entry.rule == self.rules[step]:
                step += 1
                if step == len(self.rules):
                    return True
        return False


@dataclass(frozen=True)
class CorrelationSet:
    rules: tuple[CorrelationRule, ...] = ()
    errors: tuple[LoadError, ...] = ()

    @property
    def by_base(self) -> dict[str, tuple[CorrelationRule, ...]]:
        index: dict[str, list[CorrelationRule]] = {}
        for rule in self.rules:
            for base in dict.fromkeys(rule.rules):
                index.setdefault(base, []).append(rule)
        return {base: tuple(rules) for base, rules in index.items()}

    @property
    def silent(self) -> frozenset[str]:
        """Base rules that raise no alert of their own: no correlation using them generates."""
        used = {base for rule in self.rules for base in rule.rules}
        loud = {base for rule in self.rules if rule.generate for base in rule.rules}
        return frozenset(used - loud)


def load_correlations(paths: Sequence[Path], single: RuleSet) -> CorrelationSet:
    """The correlation rules in the files under `paths`, resolved against the loaded single
    rules. Unreadable files are skipped here: the single-event loader reports them."""
    known = {rule.id for rule in single.rules}
    rules: list[CorrelationRule] = []
    errors: list[LoadError] = []
    for path in rule_files(paths):
        for doc in readable_documents(path):
            if not (isinstance(doc, dict) and "correlation" in doc) or is_history_rule(doc):
                continue
            try:
                rules.append(compile_correlation(SigmaCorrelationRule.from_dict(doc), known, path))
            except (*PARSE_FAILURES, RuleCompileError) as exc:
                errors.append(sigma_error(path, exc))
    ids = [rule.id for rule in rules]
    errors.extend(LoadError(rule.path or Path("?"), f"correlation id {rule.id} is used twice")
                  for rule in rules if ids.count(rule.id) > 1)
    return CorrelationSet(tuple(r for r in rules if ids.count(r.id) == 1), tuple(errors))


def compile_correlation(rule: SigmaCorrelationRule, known: set[str], path: Path
                        ) -> CorrelationRule:
    rule_id = rule.name or (str(rule.id) if rule.id else None)
    if rule_id is None:
        raise RuleCompileError(f"correlation {rule.title!r} has neither an id nor a name")
    kind = TYPES.get(rule.type)
    if kind is None:
        raise RuleCompileError(f"correlation {rule_id}: type {rule.type.name.lower()} is not "
                               "supported (event_count, value_count, temporal, temporal_ordered)")
    assert rule.rules is not None       # pySigma requires a correlation's rules
    bases = tuple(ref.reference for ref in rule.rules)
    missing = [base for base in bases if base not in known]
    if missing:
        raise RuleCompileError(f"correlation {rule_id}: refers to {', '.join(missing)}, which "
                               "is not a loaded single-event rule")
    threshold = len(bases)
    condition = rule.condition
    value_field: str | None = None
    absence: str | None = None
    if kind in ("event_count", "value_count"):
        # pySigma gives extended (boolean) conditions to temporal correlations only.
        assert isinstance(condition, SigmaCorrelationCondition)
        if condition.op not in (Op.GTE, Op.GT, *ABSENCE_OPS):
            raise RuleCompileError(f"correlation {rule_id}: condition {condition.op.name.lower()}"
                                   " is not supported (gte, gt, lt, lte, eq)")
        threshold = int(condition.count) + (1 if condition.op == Op.GT else 0)
        absence = ABSENCE_OPS.get(condition.op)
        if kind == "value_count":
            value_field = condition.fieldref  # type: ignore[assignment]  # one field in our rules
    group_by = tuple(rule.group_by or ())
    return CorrelationRule(
        id=rule_id, title=rule.title, description=rule.description,
        reference=rule.references[0] if rule.references else None,
        severity=Severity[rule.level.name] if rule.level else Severity.MEDIUM,
        threat=threat_from_tags(str(tag) for tag in rule.tags), type=kind, rules=bases,
        fields={b: tuple(_field(rule, name, b) for name in group_by) for b in bases},
        value_fields={b: _field(rule, value_field, b) for b in bases} if value_field else {},
        timespan_secs=float(rule.timespan.seconds), threshold=threshold,
        generate=bool(rule.generate), path=path, absence=absence)


def _field(rule: SigmaCorrelationRule, name: str, base: str) -> str:
    alias = rule.aliases.aliases.get(name) if rule.aliases else None
    return alias.mapping.get(SigmaRuleReference(base), name) if alias else name


def candidates(correlation: CorrelationRule, base_rule: str, view: EventView, match: Alert
               ) -> list[Alert]:
    """The candidates a base-rule match gives one correlation: one per combination of its
    group-by values (none when a group-by field is missing). `match` is the base rule's alert
    for the event; the candidate keeps its entities but not the raw record, to stay small."""
    values = [field_values(view, name) for name in correlation.fields[base_rule]]
    value_field = correlation.value_fields.get(base_rule)
    counted = field_values(view, value_field)[:1] if value_field else []
    if value_field and not counted:
        return []
    tags = [TAG_CORRELATION + correlation.id] + [TAG_VALUE + v for v in counted]
    out = []
    for group in itertools.islice(itertools.product(*values), MAX_GROUPS_PER_EVENT):
        out.append(match.model_copy(update={
            "event": match.event.model_copy(update={"original": ""}),
            "alert": AlertInfo(severity=match.alert.severity, event_ids=match.alert.event_ids,
                               group_key="|".join((correlation.id, *group))),
            "tags": (*tags, TAG_GROUP + orjson.dumps(group).decode())}))
    return out


def field_values(view: EventView, name: str) -> list[str]:
    if name == SUBJECTS:
        return binding_subjects(view.audit or {})
    return [v if isinstance(v, str) else orjson.dumps(v).decode()
            for v in view.values(FieldPath(name)) if v is not None and v != ""]


def binding_subjects(audit: dict[str, Any]) -> list[str]:
    """The user names a (Cluster)RoleBinding's subjects authenticate as."""
    body = audit.get("requestObject") or audit.get("responseObject") or {}
    names = []
    for subject in body.get("subjects") or () if isinstance(body, dict) else ():
        if not isinstance(subject, dict) or not subject.get("name"):
            continue
        if subject.get("kind") == "ServiceAccount":
            names.append(f"system:serviceaccount:{subject.get('namespace') or ''}:{subject['name']}")
        else:
            names.append(str(subject["name"]))
    return names


def routing(candidate: Alert) -> tuple[str, str, str | None]:
    """(correlation id, group json, counted value) of a candidate."""
    found: dict[str, str] = {}
    for tag in candidate.tags:
        for prefix in (TAG_CORRELATION, TAG_GROUP, TAG_VALUE):
            if tag.startswith(prefix):
                found[prefix] = tag[len(prefix):]
    return found.get(TAG_CORRELATION, ""), found.get(TAG_GROUP, "[]"), found.get(TAG_VALUE)


def event_watermark(newest: float, newest_wall: float, late_secs: float, now: float) -> float:
    """Event time up to which a correlate-stage engine has seen everything: the newest event
    time less the lateness allowed, advanced by the wall time the stream has been idle since
    that event arrived, so windows still close on a quiet stream."""
    return newest - late_secs + max(0.0, now - newest_wall - late_secs)
