"""Rules decided against history: first-seen (`new_terms`) and spike against a baseline (`spike`).

Neither is a Sigma correlation type, so they are written the way Sigma writes correlations (a
document with a `correlation` section naming base rules by `name`, in the same files), with a
`type` of ContainerTrail's own, after Elastic's new_terms and ElastAlert 2's new_term and spike:

    correlation:
        type: new_terms              # fires when this combination of values is new
        rules: [CT-K8S-004]          # base rules (any loaded rule, by name)
        fields: [user.name, kubernetes.namespace]
        history_window: 14d          # learning window, and how long a term stays known
        generate: true               # the base rules still raise their own alerts

    correlation:
        type: spike                  # a count per group against the group's own baseline
        rules: [CT-SPK-BASE-DENIED]
        group-by: [user.name]
        timespan: 10m                # the counting window (sliding, on event time)
        baseline_window: 6h          # the reference period before it, learned first
        spike_height: 10             # fires when count > spike_height x baseline average
        threshold_cur: 20            # ... and count >= threshold_cur
        threshold_ref: 0             # ... and the baseline's count >= threshold_ref

pySigma refuses these types, so sigma_rules and correlation leave them out (is_history_rule) and
this module loads them; `severity_in_production` works as on single rules. The detect stage turns
a base-rule match into a candidate (HistoryRouter, as correlation.candidates does) routed by group
to the correlate stage, where detectors.history_engine keeps the state.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from sigma.correlations import SigmaCorrelationTimespan
from sigma.rule import SigmaLevel

from ctrail.event import Alert, AlertInfo, Severity, Threat
from detectors.attack import threat_from_tags
from detectors.correlation import (
    MAX_GROUPS_PER_EVENT,
    TAG_CORRELATION,
    TAG_GROUP,
    field_values,
)
from detectors.matcher import EventView, FieldPath
from detectors.sigma_rules import (
    PARSE_FAILURES,
    LoadError,
    RuleSet,
    is_history_rule,
    production_severity,
    readable_documents,
    rule_files,
)
from detectors.values import RuleCompileError

DEFAULT_HISTORY_WINDOW: Final = "14d"
# A first-seen term seen again within this much event time of its last sending is not sent to
# the correlate stage again: it is known either way, and most requests repeat a known term.
RESEND_AFTER_SECS: Final = 300.0
MAX_RECENT_TERMS: Final = 100_000


class HistoryRulesConfig(BaseModel):
    """State limits of first-seen and spike rules, and their backfill from the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_groups_per_rule: PositiveInt = Field(
        50_000, description="Terms (first-seen) or groups (spike) a rule keeps; the least "
        "recently seen is forgotten first (and counted).")
    backfill: bool = Field(
        True, description="Learn a newly added rule's history window from the stored events "
        "when the correlate stage starts, so it is quiet on what the store already holds.")
    history_window_days: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Per rule id, a history (learning) window in days "
        "that replaces the rule's `history_window` (first-seen) or `baseline_window` (spike).")


@dataclass(frozen=True, slots=True)
class HistoryRule:
    id: str
    title: str
    description: str | None
    reference: str | None
    severity: Severity
    production_severity: Severity | None
    threat: Threat | None
    type: str                                   # "new_terms" or "spike"
    rules: tuple[str, ...]                      # base rule ids
    fields: tuple[str, ...]                     # the term (new_terms) or the group (spike)
    history_secs: float                         # learning window; spike: the baseline window
    timespan_secs: float = 0.0                  # spike: the counting window
    spike_height: float = 0.0
    threshold_cur: int = 1
    threshold_ref: int = 0
    generate: bool = False
    path: Path | None = None

    @property
    def signature(self) -> str:
        """What the kept state depends on: state of another signature is dropped."""
        return orjson.dumps([self.type, self.rules, self.fields]).decode()


@dataclass(frozen=True)
class HistorySet:
    rules: tuple[HistoryRule, ...] = ()
    errors: tuple[LoadError, ...] = ()

    def silent(self, correlation_used: set[str], correlation_silent: frozenset[str]
               ) -> frozenset[str]:
        """Base rules that raise no alert of their own: every rule using them (correlations
        and these) has `generate: false`."""
        used = correlation_used | {b for rule in self.rules for b in rule.rules}
        loud = (correlation_used - correlation_silent) | {
            b for rule in self.rules if rule.generate for b in rule.rules}
        return frozenset(used - loud)


def load_history_rules(paths: Sequence[Path], single: RuleSet,
                       config: HistoryRulesConfig | None = None) -> HistorySet:
    """The new_terms and spike rules under `paths`, checked against the loaded single rules.
    Files that do not read are skipped (the single-event loader reports them)."""
    config = config or HistoryRulesConfig()
    known = {rule.id for rule in single.rules}
    rules: dict[str, HistoryRule] = {}
    errors: list[LoadError] = []
    for path in rule_files(paths):
        for doc in readable_documents(path):
            if not is_history_rule(doc):
                continue
            try:
                rule = compile_history_rule(doc, known, path, config)
            except (*PARSE_FAILURES, RuleCompileError) as exc:
                errors.append(LoadError(path, str(exc)))
                continue
            if rule.id in rules or rule.id in known:
                errors.append(LoadError(path, f"rule id {rule.id} is already used"))
                continue
            rules[rule.id] = rule
    return HistorySet(tuple(rules.values()), tuple(errors))


def compile_history_rule(doc: dict[str, Any], known: set[str], path: Path,
                         config: HistoryRulesConfig) -> HistoryRule:
    """One new_terms or spike document -> HistoryRule. Raises RuleCompileError (or a
    PARSE_FAILURES error from pySigma's helpers) naming what is wrong."""
    rule_id = doc.get("name") or doc.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise RuleCompileError(f"rule {doc.get('title')!r} has neither an id nor a name")
    spec: dict[str, Any] = doc["correlation"]
    kind = spec["type"]
    bases = tuple(spec.get("rules") or ())
    if not bases or not all(isinstance(b, str) for b in bases):
        raise RuleCompileError(f"rule {rule_id}: `rules` must list base rule names")
    missing = [b for b in bases if b not in known]
    if missing:
        raise RuleCompileError(f"rule {rule_id}: refers to {', '.join(missing)}, which is not "
                               "a loaded single-event rule")
    fields = tuple(spec.get("fields" if kind == "new_terms" else "group-by") or ())
    if kind == "new_terms" and not fields:
        raise RuleCompileError(f"rule {rule_id}: new_terms needs `fields`")
    for name in fields:
        FieldPath(name)                         # a RuleCompileError for an unknown derived field
    history_key = "history_window" if kind == "new_terms" else "baseline_window"
    override = config.history_window_days.get(rule_id)
    history = override * 86_400 if override else _secs(
        spec.get(history_key, DEFAULT_HISTORY_WINDOW), rule_id, history_key)
    level = doc.get("level")
    extra: dict[str, Any] = {}
    if kind == "spike":
        extra = spike_settings(rule_id, spec)
    tags = doc.get("tags") or ()
    references = doc.get("references") or ()
    return HistoryRule(
        id=rule_id, title=str(doc.get("title") or rule_id), description=doc.get("description"),
        reference=str(references[0]) if references else None,
        severity=Severity[SigmaLevel[str(level).upper()].name] if level else Severity.MEDIUM,
        production_severity=production_severity(rule_id, doc),
        threat=threat_from_tags(str(tag) for tag in tags), type=kind, rules=bases,
        fields=fields, history_secs=history, generate=bool(spec.get("generate", False)),
        path=path, **extra)


def spike_settings(rule_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    timespan = _secs(spec.get("timespan"), rule_id, "timespan")
    height = spec.get("spike_height")
    if not isinstance(height, (int, float)) or height <= 0:
        raise RuleCompileError(f"rule {rule_id}: spike needs a positive `spike_height`")
    current, reference = spec.get("threshold_cur", 1), spec.get("threshold_ref", 0)
    if not isinstance(current, int) or not isinstance(reference, int) or current < 1 \
            or reference < 0:
        raise RuleCompileError(f"rule {rule_id}: threshold_cur must be an integer >= 1 and "
                               "threshold_ref an integer >= 0")
    return {"timespan_secs": timespan, "spike_height": float(height),
            "threshold_cur": current, "threshold_ref": reference}


def _secs(value: Any, rule_id: str, key: str) -> float:
    if value is None:
        raise RuleCompileError(f"rule {rule_id}: `{key}` is required")
    try:
        return float(SigmaCorrelationTimespan(str(value)).seconds)
    except PARSE_FAILURES as exc:
        raise RuleCompileError(f"rule {rule_id}: `{key}` {value!r} is not a timespan such as "
                               f"10m, 6h or 14d ({exc})") from None


class HistoryRouter:
    """The detect stage's half: a base-rule match becomes a candidate per history rule, keyed
    by the rule and its field values (the correlate stage's partition key), as correlation
    candidates are. A first-seen term sent in the last RESEND_AFTER_SECS of event time is not
    sent again (`thin`); hunt and backfill, which read history newest first, do not thin."""

    def __init__(self, history: HistorySet, thin: bool = True) -> None:
        self.rules = history
        index: dict[str, list[HistoryRule]] = {}
        for rule in history.rules:
            for base in dict.fromkeys(rule.rules):
                index.setdefault(base, []).append(rule)
        self.by_base = {base: tuple(rules) for base, rules in index.items()}
        self.thin = thin
        self.recent: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()
        self.thinnable: frozenset[str] = frozenset()

    def thin_before_alerting(self, silent_only_here: set[str] | frozenset[str]) -> None:
        """Base rules (silent, used by no correlation) whose every user is a first-seen rule:
        the detector asks `due` before it builds their alert, which is then most often not
        needed (CT-NEW-003's base matches every request of a human user)."""
        if self.thin:
            self.thinnable = frozenset(
                base for base in silent_only_here
                if all(rule.type == "new_terms" for rule in self.by_base.get(base, ())))

    def due(self, base: str, view: EventView, t: float) -> bool:
        """Whether a match of `base` at event time t gives some first-seen rule a term it has
        not sent lately (nothing is recorded: the candidates' making records it)."""
        for rule in self.by_base.get(base, ()):
            values = [term_values(view, name) for name in rule.fields]
            for group in itertools.islice(itertools.product(*values), MAX_GROUPS_PER_EVENT):
                last = self.recent.get((rule.id, group))
                if last is None or abs(t - last) >= RESEND_AFTER_SECS:
                    return True
        return False

    def candidates(self, alerts: Sequence[Alert], view: EventView) -> list[Alert]:
        if not self.by_base:
            return []
        return [candidate for alert in alerts for rule in self.by_base.get(alert.rule.id, ())
                for candidate in self._of(rule, view, alert)]

    def _of(self, rule: HistoryRule, view: EventView, match: Alert) -> list[Alert]:
        values = [term_values(view, name) for name in rule.fields]
        out = []
        t = match.timestamp.timestamp()
        for group in itertools.islice(itertools.product(*values), MAX_GROUPS_PER_EVENT):
            if self.thin and rule.type == "new_terms" and self._sent_lately((rule.id, group), t):
                continue
            group_json = orjson.dumps(group).decode()
            out.append(match.model_copy(update={
                "event": match.event.model_copy(update={"original": ""}),
                "alert": AlertInfo(severity=match.alert.severity,
                                   event_ids=match.alert.event_ids,
                                   group_key="|".join((rule.id, *group))),
                "tags": (TAG_CORRELATION + rule.id, TAG_GROUP + group_json)}))
        return out

    def _sent_lately(self, key: tuple[str, tuple[str, ...]], t: float) -> bool:
        last = self.recent.get(key)
        if last is not None and abs(t - last) < RESEND_AFTER_SECS:
            self.recent.move_to_end(key)
            return True
        self.recent[key] = t
        self.recent.move_to_end(key)
        if len(self.recent) > MAX_RECENT_TERMS:
            self.recent.popitem(last=False)
        return False


_PATHS: dict[str, FieldPath] = {}
_MISSING: Final = object()


def term_values(view: EventView, name: str) -> list[str]:
    """field_values, with a short cut for a plain value of the event model (user.name,
    source.ip, kubernetes.namespace): read as attributes, without the document dump the
    matcher builds for non-audit fields (a third of the time of a human user's request)."""
    path = _PATHS.get(name)
    if path is None:
        path = _PATHS[name] = FieldPath(name)
    if path.derived is None and not path.in_audit:
        node: Any = view.event
        for part in path.parts:
            node = getattr(node, part, _MISSING)
            if node is None:
                return []
            if node is _MISSING:
                return field_values(view, name)
        if isinstance(node, str):
            return [node] if node else []
    return field_values(view, name)
