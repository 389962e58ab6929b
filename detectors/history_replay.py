"""First-seen and spike rules over stored history: the backfill of a newly added rule, and
`ctrail hunt` of such a rule.

Both read the events of the base rules' datasets through the store's own search API
(`store.search`, the same on SQLite and Elasticsearch), newest first (detectors.hunt.newest_first),
and run each through the detector exactly as the detect stage does (SigmaDetector.detect), so
the candidates are the ones streaming would have made; the history router does not thin them
here, since history arrives newest first.

- Backfill (`backfill`): a rule the correlate stage's checkpoint does not know learns the history
  window that ends at the newest stored event of its datasets (event time, not the wall clock).
  Every candidate is recorded as known and nothing alerts. A store that holds events older
  than the window covers it: the rule is active at once. In a younger store the rule has
  learned since the oldest event the scan read, and keeps learning for the rest of the window.
  The scan reads the base rules' datasets, narrowed to their rule-index key where it is a
  resource, subresource or verb (scan_query), one rule at a time.
- Hunt (`hunt_history`): the rule's candidates in [from - history window, to) are replayed
  oldest first through a fresh HistoryEngine, and the alerts it raises in [from, to) are the
  result. With --from, [from - window, from) is the learning period; without it, learning begins
  at the rule's first candidate, as it does for a rule streaming from an empty store. The
  candidates (small: no raw record) are held in memory to be put in time order.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from ctrail.errors import ConfigError, UsageError
from ctrail.event import Alert, Event
from detectors.correlation import routing
from detectors.derived import TagHistory
from detectors.history_engine import HistoryEngine
from detectors.history_rules import HistoryRouter, HistoryRule, HistorySet
from detectors.hunt import newest_first
from detectors.rule_index import PREFERRED_FIELDS
from detectors.sigma_detector import SigmaDetector
from detectors.sigma_rules import is_history_rule, readable_documents

log = logging.getLogger(__name__)


def replaying(detector: SigmaDetector, rules: Sequence[HistoryRule]) -> SigmaDetector:
    """A copy of the detector that routes only `rules`, without thinning, and with its own
    stateful parts (the live detector is left untouched)."""
    replay = copy.copy(detector)
    replay.history = HistoryRouter(HistorySet(tuple(rules)), thin=False)
    replay.tags = TagHistory()
    return replay


def datasets_query(detector: SigmaDetector, rules: Sequence[HistoryRule]) -> str:
    by_id = {rule.id: rule for rule in detector.rules.rules}
    datasets = dict.fromkeys(dataset for rule in rules for base in rule.rules
                             for dataset in (by_id[base].datasets or (by_id[base].dataset,)))
    return " OR ".join(f'event.dataset:"{dataset}"' for dataset in datasets)


def stored_events(store: Any, scope: str, time_from: datetime | None,
                  time_to: datetime | None) -> Iterator[Event]:
    """The stored events in scope, newest first, as typed Events (a document that no longer
    validates is skipped and logged by id)."""
    pager = lambda upper, size: store.search(scope, "events", time_from, upper, size)  # noqa: E731
    for doc in newest_first(pager, time_to):
        try:
            yield Event.model_validate(doc)
        except ValueError:
            log.warning("Skipped a stored event that does not validate.",
                        extra={"event_id": (doc.get("event") or {}).get("id")})


def candidates_of(replay: SigmaDetector, event: Event) -> list[Alert]:
    return replay.detect(event)[1]


def backfill(engine: HistoryEngine, detector: SigmaDetector, store: Any,
             rule_ids: Sequence[str], until: datetime | None = None) -> dict[str, int]:
    """Learn the history window of each rule in `rule_ids` from the store (see the module
    docstring); returns how many candidates each learned."""
    learned = {rule_id: _backfill_one(engine, detector, store, engine.rules[rule_id], until)
               for rule_id in rule_ids}
    log.info("Backfilled first-seen and spike rules from the store.", extra={"learned": learned})
    return learned


def _backfill_one(engine: HistoryEngine, detector: SigmaDetector, store: Any,
                  rule: HistoryRule, until: datetime | None) -> int:
    datasets = datasets_query(detector, [rule])
    newest = store.search(datasets, "events", None, until, 1)
    if not newest:
        return 0                                # nothing stored: learns from its first match
    end = datetime.fromisoformat(str(newest[-1]["@timestamp"]))
    start = end - timedelta(seconds=rule.history_secs)
    replay = replaying(detector, [rule])
    learned, oldest = 0, end.timestamp()
    for event in stored_events(store, scan_query(detector, rule), start, until):
        oldest = min(oldest, event.timestamp.timestamp())
        for candidate in candidates_of(replay, event):
            if routing(candidate)[0] == rule.id:    # not the correlations' candidates
                engine.learn(candidate)
                learned += 1
    # The store covers the whole window when it holds an event older than its start; else
    # the rule has watched since the oldest event read.
    covered = bool(store.search(datasets, "events", None, start, 1))
    engine.begin_learning(rule.id, start.timestamp() if covered else oldest)
    engine.unlearned.discard(rule.id)
    return learned


def scan_query(detector: SigmaDetector, rule: HistoryRule) -> str:
    """The stored events that can feed the rule: its base rules' datasets, narrowed to the
    values of their rule-index key when every base rule has one on an audit field the API
    server logs in canonical lower case (resource, subresource, verb), which the stores
    compare exactly; else every event of the datasets."""
    by_id = {r.id: r for r in detector.rules.rules}
    keys = [key for base in rule.rules if (key := by_id[base].key) is not None
            and key[0] in PREFERRED_FIELDS]
    datasets = datasets_query(detector, [rule])
    if len(keys) < len(rule.rules):
        return datasets
    clauses = " OR ".join(f'{field}:"{value}"' for field, values in keys
                          for value in sorted(values))
    return f"({datasets}) AND ({clauses})"


def history_rule_names(path: Path) -> list[str]:
    """The names of the first-seen and spike rules in `path` (none for a file that does not
    read: the single-rule path reports it)."""
    return [str(doc.get("name") or doc.get("id")) for doc in readable_documents(path)
            if is_history_rule(doc)]


def load_history_rule(path: Path, detector: SigmaDetector) -> HistoryRule:
    """The one first-seen or spike rule in `path` as `detector` loaded it (the detector must
    load the file). UsageError when the file holds several, ConfigError when it does not load."""
    names = history_rule_names(path)
    if len(names) != 1:
        raise UsageError(f"{path} holds {len(names)} first-seen or spike rules; hunt runs one")
    loaded = {rule.id: rule for rule in detector.history.rules.rules}
    if names[0] not in loaded:
        errors = [str(e) for e in detector.history.rules.errors] + \
                 [str(e) for e in detector.rules.errors]
        raise ConfigError(f"{path}: rule {names[0]} does not load" +
                          (f" ({errors[0]})" if errors else ""))
    return loaded[names[0]]


def hunt_history(store: Any, detector: SigmaDetector, rule: HistoryRule,
                 time_from: datetime | None = None, time_to: datetime | None = None,
                 limit: int = 100, late_events_secs: float = 60.0,
                 production_namespaces: frozenset[str] = frozenset()) -> list[Alert]:
    """The alerts `rule` raises over the stored events in [time_from, time_to), the newest
    `limit`, oldest first."""
    replay = replaying(detector, [rule])
    start = time_from - timedelta(seconds=rule.history_secs) if time_from else None
    found: list[Alert] = []
    for event in stored_events(store, scan_query(detector, rule), start, time_to):
        found.extend(c for c in candidates_of(replay, event) if routing(c)[0] == rule.id)
    found.reverse()                             # oldest first, in stored order
    found.sort(key=lambda c: c.timestamp)
    engine = HistoryEngine([rule], late_events_secs, production_namespaces,
                           clock=lambda: 0.0)
    if start is not None:
        engine.begin_learning(rule.id, start.timestamp())
    alerts = [alert for candidate in found for alert in engine.observe(candidate)
              if time_from is None or alert.timestamp >= time_from]
    return alerts[-limit:]
