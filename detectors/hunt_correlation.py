"""`ctrail hunt` of Sigma correlation rules: stored history replayed through the streaming
detector's own parts, so a correlation written after an incident can look back.

The rule file's correlations load with the configured rule pack around them (a correlation may
name base rules of other files: CT-COR-002 reuses CT-K8S-004; a file inside the pack is not
loaded twice), and only the file's own correlations are hunted. The events of their base rules'
datasets in [time_from, time_to) are read from the store (the same query on both stores,
detectors.hunt.newest_first), put in event-time order, and given one by one to
SigmaDetector.detect and a CorrelationEngine, as the process and correlate stages give them in
streaming; at the end every window is closed (CorrelationEngine.close_all: no later event can
come), so absence windows (`lt`, `lte`, `eq`) that were still open are decided too.

Same results as streaming: alert ids come from the rule, the group and the event that opened or
began the window, and alert times from event time, so streaming ingest of a data set and a hunt
over the stored copy give the same alerts (tests/integration/test_hunt_correlation_elasticsearch.py). Where
they can differ, streaming is the one that lost information: an event that arrived later than
`late_events_secs` behind the newest was dropped by the stream (counted in late_dropped), and
the hunt, reading in event-time order, counts it. Suppression, which folds repeats of an alert
into updates, is not applied: a hunt lists every alert.

Bounded by the time range the user gives: the events read are held in memory to be sorted
(about 2 KB each as stored documents), so hunt a day at a time over months of history.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctrail.errors import ConfigError, UsageError
from ctrail.event import Alert, Event
from detectors.correlation import CorrelationSet
from detectors.hunt import newest_first
from detectors.sigma_detector import SigmaDetector, SigmaDetectorConfig
from detectors.window_state import CorrelationEngine


def hunt_detector(path: Path, config: SigmaDetectorConfig) -> SigmaDetector:
    """The detector of the configured rules and `path`, with only `path`'s correlations.
    ConfigError when one of them does not load, UsageError when the file holds none."""
    resolved = path.resolve()
    detector = with_rule_file(config, path).build()
    errors = [e for e in detector.correlations.errors if e.path.resolve() == resolved]
    if errors:
        raise ConfigError(str(errors[0]))
    chosen = tuple(rule for rule in detector.correlations.rules
                   if rule.path is not None and rule.path.resolve() == resolved)
    if not chosen:
        raise UsageError(f"{path} holds no correlation rule")
    return SigmaDetector(detector.rules, detector.production_namespaces, detector.exceptions,
                         detector.context, CorrelationSet(chosen))


def with_rule_file(config: SigmaDetectorConfig, path: Path) -> SigmaDetectorConfig:
    """The configured rules and `path` (a file inside the configured paths is not loaded
    twice)."""
    resolved = path.resolve()
    inside = any(resolved == p.resolve() or resolved.is_relative_to(p.resolve())
                 for p in config.rule_paths)
    return config if inside else config.model_copy(
        update={"rule_paths": (*config.rule_paths, path)})


def base_datasets(detector: SigmaDetector) -> list[str]:
    """The event datasets the hunted correlations' base rules read."""
    by_id = {rule.id: rule for rule in detector.rules.rules}
    found: dict[str, None] = {}
    for correlation in detector.correlations.rules:
        for base in correlation.rules:
            rule = by_id[base]
            found.update(dict.fromkeys(rule.datasets or (rule.dataset,)))
    return list(found)


def hunt_correlations(store: Any, detector: SigmaDetector, late_events_secs: float,
                      time_from: datetime | None = None, time_to: datetime | None = None,
                      ) -> list[Alert]:
    """The alerts the hunted correlations raise over the stored events in the range, in the
    order streaming would have raised them."""
    scope = " OR ".join(f'event.dataset:"{dataset}"' for dataset in base_datasets(detector))
    docs = list(newest_first(
        lambda upper, size: store.search(scope, "events", time_from, upper, size), time_to))
    docs.reverse()                                  # oldest first, as they were stored
    docs.sort(key=event_time)                       # stable: one instant keeps the store's order
    # A constant clock: event time moves with the events only, never with the wall clock.
    engine = CorrelationEngine(detector.correlations.rules, late_events_secs, clock=lambda: 0.0)
    alerts: list[Alert] = []
    for doc in docs:
        try:
            event = Event.model_validate(doc)
        except ValueError:
            continue                        # not an event of ours: the stream never had it
        for candidate in detector.detect(event)[1]:
            alerts.extend(engine.observe(candidate))
    return alerts + engine.close_all()



def event_time(doc: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(doc["@timestamp"]))
    except (KeyError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)    # the model refuses it below
