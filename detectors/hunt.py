"""`ctrail hunt`: one Sigma rule run retroactively over the stored events.

The rule loads exactly as the detector loads it (detectors.sigma_rules, with our field mapping
and the configured placeholder lists), and the compiled predicate, the same one SigmaDetector
tests live events with, has the last word on every event. What differs per store is how the
candidates are found:

- Elasticsearch (a store with `search_lucene`): pySigma's Elasticsearch backend converts the rule
  to a Lucene query, with containertrail_pipeline() so its field names are the stored
  `kubernetes.audit.*` ones, and the store runs it as a query_string query over the events
  streams, restricted to the rule's datasets. Each hit is then confirmed by our matcher, because
  Elasticsearch compares keyword fields case-sensitively while Sigma strings are
  case-insensitive (and a few other keyword vs Sigma differences): a hit whose value differs only
  in case from the rule's is kept by the matcher when it should match. The converse, an event
  Elasticsearch misses only because of case (`verb: DELETE` against `delete`), cannot be recovered
  by confirmation; the API server logs verbs, resources and namespaces in their canonical lower
  case, so for audit events this does not arise in practice. A rule the backend cannot express
  (a `derived.` field, computed by our matcher only) or cannot convert is hunted as on the
  embedded store.
- Embedded store (and the fallback): the events of the rule's datasets in the time range
  (`event.dataset:kubernetes.audit`) are paged through store.search, newest first, and each one
  is tested with the matcher.

Both page backwards in time (the upper bound moves to the oldest event seen, and events already
seen are skipped), so `limit` counts confirmed matches, the newest `limit`, printed oldest first
as `ctrail search` prints them. Stateful derived values (a registry tag's previous digest) need
the history replayed in order and are not reproduced here.

A file holding a correlation rule is hunted by detectors.hunt_correlation (the stored events
replayed through the detector and the correlation windows); load_hunt_rule refuses it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Final, Iterator

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

from ctrail.errors import ConfigError, UsageError
from ctrail.event import Event
from detectors.derived import DERIVED_PREFIX, DerivedContext
from detectors.field_mapping import containertrail_pipeline
from detectors.matcher import EventView
from detectors.sigma_rules import PARSE_FAILURES, CompiledRule, load_rules

log = logging.getLogger(__name__)

PAGE: Final = 5_000                      # events asked for per store request
ONE_MICROSECOND: Final = timedelta(microseconds=1)

# (upper time bound or None, how many) -> the newest matching documents below it, oldest first
Pager = Callable[[datetime | None, int], list[dict[str, Any]]]


def load_hunt_rule(path: Path, variables: dict[str, list[str]] | None = None) -> CompiledRule:
    """The one single-event rule in `path`, compiled as the detector compiles it.
    UsageError for a correlation rule or a file without exactly one rule; ConfigError when the
    rule does not load."""
    if not path.is_file():
        raise ConfigError(f"rule file {path} does not exist")
    if has_correlation(path):
        raise UsageError(f"{path} is a correlation rule (detectors.hunt_correlation hunts it)")
    rules = load_rules([path], variables)
    if rules.errors:
        raise ConfigError(str(rules.errors[0]))
    if len(rules.rules) != 1:
        raise UsageError(f"{path} holds {len(rules.rules)} rules; hunt runs one rule")
    return rules.rules[0]


def has_correlation(path: Path) -> bool:
    try:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"),
                                               collect_errors=True)
    except PARSE_FAILURES:
        return False
    return any(isinstance(rule, SigmaCorrelationRule) for rule in collection.rules)


def lucene_query(path: Path, variables: dict[str, list[str]] | None = None) -> str | None:
    """The rule as Lucene, by pySigma's Elasticsearch backend with our field mapping, or None
    when the backend is not installed, cannot convert the rule, or the rule reads a derived
    field (which only our matcher computes)."""
    try:
        from sigma.backends.elasticsearch import LuceneBackend
    except ImportError:
        log.info("pysigma-backend-elasticsearch is not installed; hunting by scanning.")
        return None
    try:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
        rules = [rule for rule in collection.rules if isinstance(rule, SigmaRule)]
        if len(rules) != 1 or _reads_derived(rules[0]):
            return None
        backend = LuceneBackend(processing_pipeline=containertrail_pipeline(variables))
        queries = backend.convert_rule(rules[0])
    except (*PARSE_FAILURES, NotImplementedError) as exc:
        log.info("The Elasticsearch backend cannot convert the rule; hunting by scanning.",
                 extra={"path": str(path), "reason": str(exc)})
        return None
    if not queries or not all(isinstance(q, str) for q in queries):
        return None
    if any("none configured" in str(q) for q in queries):
        return None                       # an empty configuration list (field_mapping.NO_VALUE)
    return " OR ".join(f"({q})" for q in queries) if len(queries) > 1 else str(queries[0])


def _reads_derived(rule: SigmaRule) -> bool:
    def fields(node: Any) -> Iterator[str | None]:
        if isinstance(node, SigmaDetection):
            for item in node.detection_items:
                yield from fields(item)
        elif isinstance(node, SigmaDetectionItem):
            yield node.field
    return any(name is not None and name.startswith(DERIVED_PREFIX)
               for detection in rule.detection.detections.values()
               for name in fields(detection))


def dataset_query(rule: CompiledRule) -> str:
    """The rule's datasets as a search in our query language (and in Lucene)."""
    datasets = rule.datasets or (rule.dataset,)
    return " OR ".join(f'event.dataset:"{dataset}"' for dataset in datasets)


def hunt(store: Any, rule: CompiledRule, path: Path | None = None,
         time_from: datetime | None = None, time_to: datetime | None = None,
         limit: int = 100, variables: dict[str, list[str]] | None = None,
         context: DerivedContext | None = None) -> list[dict[str, Any]]:
    """The newest `limit` stored events in [time_from, time_to) the rule matches, oldest first,
    as stored (ECS documents)."""
    lucene = (lucene_query(path, variables)
              if path is not None and hasattr(store, "search_lucene") else None)
    if lucene is not None:
        query = f"({dataset_query(rule)}) AND ({lucene})"
        pager: Pager = lambda upper, size: store.search_lucene(query, time_from, upper, size)
    else:
        scope = dataset_query(rule)
        pager = lambda upper, size: store.search(scope, "events", time_from, upper, size)
    context = context or DerivedContext()
    found: list[dict[str, Any]] = []
    for doc in newest_first(pager, time_to):
        if matches(rule, doc, context):
            found.append(doc)
            if len(found) >= limit:
                break
    return found[::-1]


def matches(rule: CompiledRule, doc: dict[str, Any], context: DerivedContext) -> bool:
    """Our matcher's verdict on one stored document."""
    try:
        event = Event.model_validate(doc)
    except ValueError:
        return False
    return rule.matches(EventView(event, context))


def newest_first(pager: Pager, time_to: datetime | None,
                 page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Every document the pager finds below time_to, newest first, each once. Each request's
    upper bound is just above the oldest event of the previous page, so events sharing that
    instant are asked for again and skipped by id; a page of nothing new asks for more."""
    seen: set[str] = set()
    upper, size = time_to, page
    while True:
        docs = pager(upper, size)
        fresh = [doc for doc in reversed(docs) if _id(doc) not in seen]
        for doc in fresh:
            seen.add(_id(doc))
            yield doc
        if len(docs) < size:
            return
        if not fresh:
            size *= 2                     # a page of events all at one instant
            continue
        oldest = _time(docs[0])
        if oldest is None:
            size *= 2
            continue
        upper = oldest + ONE_MICROSECOND


def _id(doc: dict[str, Any]) -> str:
    return str((doc.get("event") or {}).get("id"))


def _time(doc: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(doc["@timestamp"]))
    except (KeyError, ValueError):
        return None
