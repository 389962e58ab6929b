"""The Sigma detector: single-event Sigma rules over the events topic, as a Detector component.

An event is tested only against the rules whose logsource describes its `event.dataset`
(product kubernetes / service audit <-> `kubernetes.audit`), and of those only against the
rules its own field values can satisfy (detectors.rule_index). A match raises one Alert unless one
of the rule's configured exceptions matches the event; suppressed matches are counted in
`SigmaDetector.suppressed`, never dropped silently.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from sigma.types import SigmaString

from ctrail.event import Alert, Event, Severity
from detectors.alerts import build_alert
from detectors.matcher import EventView, Predicate, all_of, any_of, field_predicate
from detectors.rule_index import RuleIndex
from detectors.sigma_rules import PACKAGED_RULES, CompiledRule, LoadError, RuleSet, load_rules

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
    exceptions: dict[str, list[ExceptionMatch]] = Field(
        default_factory=dict, description="Per rule id, matches that suppress its alerts. An "
        "entry maps event fields (e.g. user.name, kubernetes.namespace) to Sigma values "
        "(case-insensitive, * and ? wildcards); all of an entry's fields must match, and any "
        "entry suppresses.")

    def build(self) -> "SigmaDetector":
        """Load the rules (ConfigError for a missing rule path; broken rules are logged and
        skipped) and compile the exceptions."""
        rules = load_rules(self.rule_paths)
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
        return SigmaDetector(rules, frozenset(self.production_namespaces), exceptions)


def compile_exceptions(entries: list[dict[str, str]]) -> Predicate:
    """Any entry matches when all of its field -> value pairs match (Sigma string semantics)."""
    return any_of([all_of([field_predicate(field, SigmaString(value))
                           for field, value in entry.items()]) for entry in entries])


class SigmaDetector:
    """Detector: observe() matches each event against its dataset's rules; advance() has no
    windows to close, since every rule here decides on one event."""

    def __init__(self, rules: RuleSet, production_namespaces: frozenset[str],
                 exceptions: dict[str, Predicate]) -> None:
        self.rules = rules
        self.indexes = {dataset: RuleIndex(of_dataset)
                        for dataset, of_dataset in rules.by_dataset.items()}
        self.production_namespaces = production_namespaces
        self.exceptions = exceptions
        self.suppressed: dict[str, int] = {}

    @property
    def load_errors(self) -> tuple[LoadError, ...]:
        return self.rules.errors

    def observe(self, event: Event) -> list[Alert]:
        """Alerts this event raises now, one per matching rule not suppressed by an exception.
        Pure apart from the suppression counter; never raises for any event content."""
        index = self.indexes.get(event.event.dataset)
        if index is None:
            return []
        view = EventView(event)
        alerts = []
        for rule in index.candidates(view):
            if not rule.matches(view):
                continue
            excepted = self.exceptions.get(rule.id)
            if excepted is not None and excepted(view):
                self.suppressed[rule.id] = self.suppressed.get(rule.id, 0) + 1
                continue
            alerts.append(build_alert(rule, event, self.severity(rule, event)))
        return alerts

    def advance(self, now: datetime) -> list[Alert]:
        """No rule here keeps a window, so nothing becomes due as time moves."""
        return []

    def severity(self, rule: CompiledRule, event: Event) -> Severity:
        """The rule's level, raised to `severity_in_production` in a production namespace."""
        if rule.production_severity is None or not self.production_namespaces:
            return rule.severity
        namespace = event.kubernetes.namespace if event.kubernetes is not None else None
        if namespace in self.production_namespaces:
            return max(rule.severity, rule.production_severity)
        return rule.severity
