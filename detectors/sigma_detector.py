"""The Sigma detector: single-event Sigma rules over the events topic, as a Detector component.

An event is tested only against the rules whose logsource describes its `event.dataset`
(product kubernetes / service audit <-> `kubernetes.audit`), and of those only against the
rules its own field values can satisfy (detectors.rule_index). A match raises one Alert unless one
of the rule's configured exceptions matches the event; suppressed matches are counted in
`SigmaDetector.suppressed`, never dropped silently.

Configuration the rules read (the catalog's `detection.*` keys): the lists trusted_registries,
ci_actors, system_namespaces and production_namespaces are Sigma placeholders replaced when the
rules load (`%ci_actors%`); trusted_registries also feeds the derived field that lists a pod's
untrusted image registries (detectors.derived), because "some image is from outside the list"
is not a Sigma value test. production_namespaces raises rules with `severity_in_production`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat
from sigma.types import SigmaString

from ctrail.event import Alert, Event, Severity
from detectors.alerts import build_alert
from detectors.correlation import (
    CorrelationSet,
    candidates as correlation_candidates,
    field_values,
    load_correlations,
)
from detectors.derived import DerivedContext, TagHistory
from detectors.history_rules import (
    HistoryRouter,
    HistoryRulesConfig,
    HistorySet,
    load_history_rules,
)
from detectors.matcher import EventView, Predicate, all_of, any_of, field_predicate
from detectors.rule_index import RuleIndex
from detectors.sigma_rules import PACKAGED_RULES, CompiledRule, LoadError, RuleSet, load_rules
from detectors.suppression import SuppressionConfig

log = logging.getLogger(__name__)

ExceptionMatch = Annotated[dict[str, str], Field(min_length=1)]


class SigmaDetectorConfig(BaseModel):
    """Single-event detection with Sigma rules: ContainerTrail's rule pack and any others."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["sigma"] = "sigma"
    rule_paths: tuple[Path, ...] = Field(
        (PACKAGED_RULES,), description="Sigma rule files or directories (searched recursively, "
        "except `tests` folders). The default is ContainerTrail's own rule pack.")
    production_namespaces: tuple[str, ...] = Field(
        (), description="Namespaces where rules with `severity_in_production` (CT-K8S-004) "
        "raise their severity.")
    trusted_registries: tuple[str, ...] = Field(
        (), description="Registry hosts images may come from (CT-K8S-013); an image without a "
        "registry host is from docker.io. Empty: CT-K8S-013 and CT-COR-005 do not fire.")
    ci_actors: tuple[str, ...] = Field(
        (), description="Registry users that are CI or robot accounts (CT-REG-001, "
        "CT-COR-001); a push by anyone else raises an alert. Case-insensitive, * and ? wildcards.")
    system_namespaces: tuple[str, ...] = Field(
        (), description="Namespaces treated like kube-system (CT-K8S-011: a pod created there "
        "by a human user).")
    allowed_users: tuple[str, ...] = Field(
        (), description="The people allowed to use the API (CT-K8S-028: a request by any other "
        "human user). Empty (the default): the rule is off. Case-insensitive, * and ? wildcards.")
    allowed_namespaces: tuple[str, ...] = Field(
        (), description="Namespaces that may be created besides kube-system, kube-public, "
        "kube-node-lease and default (CT-K8S-029). Empty (the default): the rule is off.")
    late_events_secs: NonNegativeFloat = Field(
        60, description="How late (event time, behind the newest event seen) an event may "
        "arrive and still count in a correlation window.")
    history_rules: HistoryRulesConfig = Field(
        HistoryRulesConfig(), description="First-seen and spike rules (detectors.history_rules): "
        "their state limits and backfill.")
    suppression: SuppressionConfig | None = Field(
        None, description="Repeats of an alert within a window, grouped by a key, become one "
        "alert and one update with the count. Off when absent (every alert is published).")
    exceptions: dict[str, list[ExceptionMatch]] = Field(
        default_factory=dict, description="Per rule id, matches that suppress its alerts. An "
        "entry maps event fields (e.g. user.name, kubernetes.namespace) to Sigma values "
        "(case-insensitive, * and ? wildcards); all of an entry's fields must match, and any "
        "entry suppresses.")

    def build(self) -> "SigmaDetector":
        """Load the rules (ConfigError for a missing rule path; broken rules are logged and
        skipped) and compile the exceptions."""
        rules = load_rules(self.rule_paths, self.variables())
        if not rules.rules:
            log.warning("No Sigma rule is loaded; nothing will be detected.",
                        extra={"rule_paths": [str(path) for path in self.rule_paths]})
        for error in rules.errors:
            log.warning("Skipped a Sigma rule that does not load.",
                        extra={"path": str(error.path), "line": error.line,
                               "reason": error.reason})
        known = {rule.id for rule in rules.rules}
        for rule_id in sorted(set(self.exceptions) - known):
            log.warning("Exceptions name a rule that is not loaded.", extra={"rule_id": rule_id})
        exceptions = {rule_id: compile_exceptions(entries)
                      for rule_id, entries in self.exceptions.items()}
        context = DerivedContext(frozenset(r.lower() for r in self.trusted_registries))
        correlations = load_correlations(self.rule_paths, rules)
        for error in correlations.errors:
            log.warning("Skipped a Sigma correlation rule that does not load.",
                        extra={"path": str(error.path), "reason": error.reason})
        history = load_history_rules(self.rule_paths, rules, self.history_rules)
        for error in history.errors:
            log.warning("Skipped a first-seen or spike rule that does not load.",
                        extra={"path": str(error.path), "reason": error.reason})
        return SigmaDetector(rules, frozenset(self.production_namespaces), exceptions, context,
                             correlations, history)

    def variables(self) -> dict[str, list[str]]:
        """The configuration lists, by placeholder name (detectors.field_mapping.PLACEHOLDERS)."""
        return {"trusted_registries": list(self.trusted_registries),
                "ci_actors": list(self.ci_actors),
                "system_namespaces": list(self.system_namespaces),
                "production_namespaces": list(self.production_namespaces),
                "allowed_users": list(self.allowed_users),
                "allowed_namespaces": list(self.allowed_namespaces)}


def dedup_value(rule: CompiledRule, view: EventView, event: Event) -> str | None:
    """What the rule's alert is one per (sigma_rules: dedup_field, dedup_window): the first
    value of each field, and the window of event time; None when a field has no value, so the
    alert is the request's own rather than one shared with unrelated events."""
    values = []
    for name in rule.dedup_fields:
        found = field_values(view, name)
        if not found:
            return None
        values.append(found[0])
    if rule.dedup_window is not None:
        values.append(f"window:{int(event.timestamp.timestamp() // rule.dedup_window)}")
    return values[0] if len(values) == 1 else orjson.dumps(values).decode()


def compile_exceptions(entries: list[dict[str, str]]) -> Predicate:
    """Any entry matches when all of its field -> value pairs match (Sigma string semantics)."""
    return any_of([all_of([field_predicate(field, SigmaString(value))
                           for field, value in entry.items()]) for entry in entries])


class SigmaDetector:
    """Detector: observe() matches each event against its dataset's rules; advance() has no
    windows to close, since every rule here decides on one event."""

    def __init__(self, rules: RuleSet, production_namespaces: frozenset[str],
                 exceptions: dict[str, Predicate],
                 context: DerivedContext | None = None,
                 correlations: CorrelationSet | None = None,
                 history: HistorySet | None = None) -> None:
        self.rules = rules
        self.correlations = correlations or CorrelationSet()
        self.by_base = self.correlations.by_base
        self.history = HistoryRouter(history or HistorySet())
        correlation_bases = {base for rule in self.correlations.rules for base in rule.rules}
        self.silent = self.history.rules.silent(correlation_bases, self.correlations.silent)
        self.history.thin_before_alerting(self.silent - correlation_bases)
        self.indexes = {dataset: RuleIndex(of_dataset)
                        for dataset, of_dataset in rules.by_dataset.items()}
        self.production_namespaces = production_namespaces
        self.exceptions = exceptions
        self.suppressed: dict[str, int] = {}
        self.context = context or DerivedContext()
        self.tags = TagHistory()
        self.evaluated = 0              # rules tested in full, for the benchmark

    @property
    def load_errors(self) -> tuple[LoadError, ...]:
        return self.rules.errors

    def observe(self, event: Event) -> list[Alert]:
        """Alerts this event raises now, one per matching rule not suppressed by an exception
        (base rules of correlations that do not `generate` raise none of their own).
        Pure apart from the suppression counter; never raises for any event content."""
        return self.detect(event)[0]

    def detect(self, event: Event) -> tuple[list[Alert], list[Alert]]:
        """observe()'s alerts, and the candidates this event gives correlation rules
        (detectors.correlation), which the detect stage routes to ctrail.correlate."""
        index = self.indexes.get(event.event.dataset)
        if index is None:
            return [], []
        preset = self.tags.observe(event) if event.registry is not None else None
        view = EventView(event, self.context, preset)
        alerts = []
        candidates = index.candidates(view)
        self.evaluated += len(candidates)
        for rule in candidates:
            if not rule.matches(view):
                continue
            excepted = self.exceptions.get(rule.id)
            if excepted is not None and excepted(view):
                self.suppressed[rule.id] = self.suppressed.get(rule.id, 0) + 1
                continue
            if rule.id in self.history.thinnable and \
                    not self.history.due(rule.id, view, event.timestamp.timestamp()):
                continue                # a known first-seen term, sent lately: no alert to build
            key = dedup_value(rule, view, event) if rule.dedup_fields else None
            alerts.append(build_alert(rule, event, self.severity(rule, event), key))
        routed = [candidate for alert in alerts
                  for correlation in self.by_base.get(alert.rule.id, ())
                  for candidate in correlation_candidates(correlation, alert.rule.id, view, alert)]
        if alerts:
            routed.extend(self.history.candidates(alerts, view))
        return [alert for alert in alerts if alert.rule.id not in self.silent], routed

    def advance(self, now: datetime) -> list[Alert]:
        """No rule here keeps a window, so nothing becomes due as time moves."""
        return []

    def severity(self, rule: CompiledRule, event: Event) -> Severity:
        """The rule's level, raised to `severity_in_production` in a production namespace, or
        the event's own severity for rules with `severity_from_event`."""
        if rule.severity_from_event and event.event.severity is not None:
            try:
                return Severity(event.event.severity)
            except ValueError:
                return rule.severity
        if rule.production_severity is None or not self.production_namespaces:
            return rule.severity
        namespace = event.kubernetes.namespace if event.kubernetes is not None else None
        if namespace in self.production_namespaces:
            return max(rule.severity, rule.production_severity)
        return rule.severity
