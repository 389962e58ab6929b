"""Load Sigma rule files with pySigma and compile each rule into a predicate over events.

Loading follows pySigma's collect_errors discipline: a file or rule that is broken (bad YAML,
an invalid rule, a feature the matcher lacks, a logsource we do not collect, a duplicate id) is
reported as a LoadError naming its file, and skipped; every other rule still loads. A rule path
that does not exist is a configuration mistake and raises ConfigError.

Rule ids. Alerts, reports and users' exceptions name a rule by `rule.id`, so it must be stable
and readable. Sigma gives every rule a UUID `id` and an optional `name`, "a unique human-readable
name that can be used instead of the id" (the Sigma specification; correlation rules refer to
rules by it). Our rules set `name: CT-K8S-004` next to their UUID, so `rule.id` is the name when
a rule has one and the UUID otherwise: our rules read "CT-K8S-004", SigmaHQ's rules keep their
UUIDs, and every file stays a valid Sigma rule with no custom key needed for identity.

Our custom rule attribute (pySigma keeps unknown top-level keys in `custom_attributes`):
- `severity_in_production: <level>`: the severity when the event's kubernetes.namespace is one of
  the configured production namespaces (CT-K8S-004: medium, high in production).
- `severity_from_event: true`: the alert's severity is the event's own `event.severity` when it
  has one (CT-RT-001: the Falco priority, mapped by the Falco parser), else the rule's level.
- `identity_from_event: true`: the rule re-raises an external detector's alert (CT-RT-001: a
  Falco alert), which keeps its identity: `rule.name` is the detector's rule (`rule.name` of the
  event), `message` its output line, `tags` its tags (MITRE ones as `threat.*`), and the group
  key is the detector's rule and the container (detectors.alerts).
- `dedup_field: <field>`: the alert's id and group key come from the rule id and the first value
  of this event field (derived fields too) instead of the event: every event with the same
  value raises the same alert, which the store keeps once and suppression folds (CT-COR-005:
  once per image digest). A list of fields: the first value of each. An event that lacks one
  of them raises the alert of its own request, as a rule without the attribute does.
- `dedup_window: <timespan>` (with dedup_field; Sigma's timespan form, `5m`): the id also
  holds the window of event time the event falls in (windows aligned on the Unix epoch, so
  every process, replay and hunt computes the same id, with no state), and the group key stays
  the alert's entities: one alert per burst of the same act on the same object, not one ever
  (CT-K8S-017: Helm creates a webhook's Mutating and ValidatingWebhookConfiguration, of one
  name, within seconds; that install is one alert). Two requests either side of a window's
  edge raise two alerts: the edge costs an alert, never a miss.
- `off_while_empty: [<list>, ...]`: configuration lists the rule means nothing without (CT-K8S-028:
  allowed_users); while one is empty the rule is loaded and listed but never evaluated.

Configuration lists reach rules as Sigma placeholders (`%ci_actors%`, detectors.field_mapping),
replaced when the rules load, so load_rules takes their values.

A rule without `level` is treated as medium. Directories are searched recursively for *.yml and
*.yaml, except folders named `tests`, which hold behaviour cases rather than rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Iterable, Sequence

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule, SigmaCorrelationTimespan
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.rule.base import SigmaYAMLLoader

from ctrail.errors import ConfigError
from ctrail.event import Severity, Threat
from detectors.attack import threat_from_tags
from detectors.field_mapping import (
    PLACEHOLDERS,
    containertrail_pipeline,
    datasets_of,
    is_configured,
)
from detectors.matcher import FieldPath, Predicate, any_of, compile_condition
from detectors.request_identity import reads_request_body
from detectors.rule_index import IndexKey, index_key
from detectors.values import RuleCompileError

PACKAGED_RULES: Final = Path(__file__).resolve().parent / "rules"
RULE_SUFFIXES: Final = frozenset({".yml", ".yaml"})
# What a third-party library may raise on hostile input despite collect_errors; caught per file
# so one file never takes the others down.
PARSE_FAILURES: Final = (SigmaError, ValueError, TypeError, AttributeError, KeyError)
# Correlation-like rule types of our own, which pySigma refuses: detectors.history_rules loads them.
HISTORY_TYPES: Final = frozenset({"new_terms", "spike"})


@dataclass(frozen=True, slots=True)
class LoadError:
    """A rule file, or one rule in it, that could not be loaded, and why."""

    path: Path
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One loaded rule: what alerts say about it, and its predicate."""

    id: str                         # `name` when the rule has one, else its UUID
    title: str
    description: str | None
    reference: str | None           # the first of the rule's references
    severity: Severity              # from `level`
    production_severity: Severity | None
    threat: Threat | None
    dataset: str                    # the event.dataset the rule is about
    path: Path | None
    matches: Predicate
    key: IndexKey | None = None     # a field value the rule requires (detectors.rule_index)
    datasets: tuple[str, ...] = ()  # every dataset it applies to, when more than `dataset`
    severity_from_event: bool = False
    dedup_fields: tuple[str, ...] = ()  # `dedup_field`: one alert per value of these fields
    dedup_window: float | None = None   # `dedup_window` (seconds): ... within one window
    identity_from_event: bool = False   # an external detector's alert, re-raised as itself
    reads_request_body: bool = False    # its alert id tells requests apart by their body too
    inert: bool = False             # `off_while_empty` and such a list is empty: never evaluated


@dataclass(frozen=True)
class RuleSet:
    """The loaded rules, indexed by the event.dataset they apply to, and what failed."""

    rules: tuple[CompiledRule, ...]
    errors: tuple[LoadError, ...]
    by_dataset: dict[str, tuple[CompiledRule, ...]] = field(init=False)

    def __post_init__(self) -> None:
        index: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for dataset in rule.datasets or (rule.dataset,):
                index.setdefault(dataset, []).append(rule)
        object.__setattr__(self, "by_dataset", {k: tuple(v) for k, v in index.items()})


def load_rules(paths: Sequence[Path],
               variables: dict[str, list[str]] | None = None) -> RuleSet:
    """Every rule under `paths` (files or directories), with the configuration lists
    `variables` for their placeholders. Raises ConfigError for a missing path; broken files and
    rules are returned in RuleSet.errors, never raised."""
    collections, errors = [], []
    for path in rule_files(paths):
        collection, file_errors = parse_file(path)
        errors.extend(file_errors)
        if collection is not None:
            collections.append(collection)
    # Merging applies Sigma filters across all files, as pySigma's load_ruleset does.
    merged = SigmaCollection.merge(collections)
    single = [rule for rule in merged.rules if isinstance(rule, SigmaRule)]
    rules, compile_errors = compile_all(single, containertrail_pipeline(variables))
    return RuleSet(tuple(rules), tuple(errors + compile_errors))


def rule_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(
                p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file()
                and "tests" not in p.relative_to(path).parts[:-1]))
        else:
            raise ConfigError(f"rule path {path} does not exist")
    return files


def rule_documents(path: Path) -> list[Any]:
    """The YAML documents of a rule file. Read and parsed once while the file is unchanged:
    the single-event rules, the correlations and the rules fingerprint each need them at every
    start (YAML parsing is most of loading a rule). A copy each time: pySigma may change what
    it is given. Raises OSError, UnicodeDecodeError or yaml.YAMLError."""
    stat = path.stat()
    return copy.deepcopy(_parsed_documents(path, stat.st_mtime_ns, stat.st_size))


def readable_documents(path: Path) -> list[Any]:
    """rule_documents, or none for a file that does not read: the single-event loader
    (parse_file) reports it, once; the other readers of rule files skip it."""
    try:
        return rule_documents(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []


@lru_cache(maxsize=4096)
def _parsed_documents(path: Path, _mtime_ns: int, _size: int) -> list[Any]:
    return list(yaml.load_all(path.read_text(encoding="utf-8"), SigmaYAMLLoader))


def parse_file(path: Path) -> tuple[SigmaCollection | None, list[LoadError]]:
    """The file's rules (valid ones only) and the errors of its broken documents and rules."""
    try:
        documents = rule_documents(path)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [LoadError(path, f"cannot be read: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [LoadError(path, f"is not valid YAML: {_first_line(exc)}",
                                mark.line + 1 if mark is not None else None)]
    documents = [doc for doc in documents if not is_history_rule(doc)]
    errors = [LoadError(path, f"document {i} is not a mapping")
              for i, doc in enumerate(documents, 1)
              if doc is not None and not isinstance(doc, dict)]
    try:
        collection = SigmaCollection.from_dicts(
            [doc for doc in documents if isinstance(doc, dict)], collect_errors=True,
            source=SigmaRuleLocation(path), collect_filters=True, resolve_references=False)
    except PARSE_FAILURES as exc:
        return None, errors + [sigma_error(path, exc)]
    errors.extend(sigma_error(path, exc) for exc in collection.errors)
    valid: list[Any] = []
    for rule in collection.rules + collection.filters:
        if isinstance(rule, SigmaCorrelationRule):
            # Left out here, before merging (resolving its references could fail for all
            # files): detectors.correlation loads and checks correlation rules.
            continue
        elif not rule.errors:
            valid.append(rule)
    return SigmaCollection(valid, collect_filters=True, resolve_references=False), errors


def is_history_rule(doc: Any) -> bool:
    """A first-seen or spike rule document (detectors.history_rules), not for pySigma."""
    spec = doc.get("correlation") if isinstance(doc, dict) else None
    return isinstance(spec, dict) and spec.get("type") in HISTORY_TYPES


def compile_all(sigma_rules: Iterable[SigmaRule], pipeline: ProcessingPipeline,
                ) -> tuple[list[CompiledRule], list[LoadError]]:
    rules: list[CompiledRule] = []
    errors: list[LoadError] = []
    seen: dict[str, Path | None] = {}
    for sigma_rule in sigma_rules:
        path = sigma_rule.source.path if sigma_rule.source else Path("<unknown>")
        try:
            rule = compile_rule(sigma_rule, pipeline)
        except (SigmaError, RuleCompileError) as exc:
            errors.append(sigma_error(path, exc))
            continue
        if rule.id in seen:
            errors.append(LoadError(path, f"rule id {rule.id} is already used by {seen[rule.id]}"))
            continue
        seen[rule.id] = rule.path
        rules.append(rule)
    return rules, errors


def compile_rule(sigma_rule: SigmaRule, pipeline: ProcessingPipeline) -> CompiledRule:
    """One parsed Sigma rule -> CompiledRule. Raises SigmaError or RuleCompileError."""
    rule_id = sigma_rule.name or (str(sigma_rule.id) if sigma_rule.id else None)
    if rule_id is None:
        raise RuleCompileError(f"rule {sigma_rule.title!r} has neither an id nor a name")
    datasets = datasets_of(sigma_rule.logsource)
    if not datasets:
        ls = sigma_rule.logsource
        raise RuleCompileError(f"rule {rule_id}: logsource product={ls.product} "
                               f"service={ls.service} is not one ContainerTrail collects")
    pipeline.apply(sigma_rule)
    # `parsed` parses anew on each access, so each tree is taken once.
    trees = [condition.parsed for condition in sigma_rule.detection.parsed_condition]
    return CompiledRule(
        id=rule_id, title=sigma_rule.title, description=sigma_rule.description,
        reference=sigma_rule.references[0] if sigma_rule.references else None,
        severity=Severity[sigma_rule.level.name] if sigma_rule.level else Severity.MEDIUM,
        production_severity=production_severity(rule_id, sigma_rule.custom_attributes),
        threat=threat_from_tags(str(tag) for tag in sigma_rule.tags),
        dataset=datasets[0], path=sigma_rule.source.path if sigma_rule.source else None,
        matches=any_of([compile_condition(tree) for tree in trees]), key=index_key(trees),
        datasets=datasets if len(datasets) > 1 else (),
        severity_from_event=sigma_rule.custom_attributes.get("severity_from_event") is True,
        identity_from_event=sigma_rule.custom_attributes.get("identity_from_event") is True,
        dedup_fields=dedup_fields(rule_id, sigma_rule.custom_attributes),
        dedup_window=dedup_window(rule_id, sigma_rule.custom_attributes),
        reads_request_body=reads_request_body(trees),
        inert=not all(is_configured(pipeline, name)
                      for name in off_while_empty(rule_id, sigma_rule.custom_attributes)))


def off_while_empty(rule_id: str, attributes: dict[str, Any]) -> list[str]:
    names = attributes.get("off_while_empty", [])
    if not isinstance(names, list) or not all(name in PLACEHOLDERS for name in names):
        raise RuleCompileError(f"rule {rule_id}: off_while_empty must list configuration lists "
                               f"({', '.join(sorted(PLACEHOLDERS))})")
    return names


def dedup_fields(rule_id: str, attributes: dict[str, Any]) -> tuple[str, ...]:
    names = attributes.get("dedup_field")
    if names is None:
        return ()
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or \
            not all(isinstance(name, str) and name for name in names):
        raise RuleCompileError(f"rule {rule_id}: dedup_field must be a field name or a list "
                               "of them")
    for name in names:
        FieldPath(name)             # a RuleCompileError for an unknown derived field
    return tuple(names)


def dedup_window(rule_id: str, attributes: dict[str, Any]) -> float | None:
    span = attributes.get("dedup_window")
    if span is None:
        return None
    if "dedup_field" not in attributes:
        raise RuleCompileError(f"rule {rule_id}: dedup_window needs dedup_field (what is the "
                               "same within the window)")
    try:
        return float(SigmaCorrelationTimespan(str(span)).seconds)
    except SigmaError:
        raise RuleCompileError(f"rule {rule_id}: dedup_window {span!r} is not a timespan "
                               "(a number and s, m, h or d: 5m)") from None


def production_severity(rule_id: str, attributes: dict[str, Any]) -> Severity | None:
    word = attributes.get("severity_in_production")
    if word is None:
        return None
    try:
        return Severity.from_word(str(word))
    except KeyError:
        raise RuleCompileError(f"rule {rule_id}: severity_in_production {word!r} is not a "
                               "Sigma level (informational, low, medium, high, critical)") from None


def sigma_error(path: Path, exc: Exception) -> LoadError:
    """A LoadError from a pySigma error, without the absolute path pySigma appends."""
    source = getattr(exc, "source", None)
    reason = str(exc.args[0]) if exc.args else type(exc).__name__
    return LoadError(path, reason, getattr(source, "line", None))


def _first_line(exc: yaml.YAMLError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
