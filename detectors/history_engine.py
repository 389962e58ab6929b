"""The correlate stage's state for first-seen and spike rules (detectors.history_rules).

Candidates arrive keyed by rule and group, as correlation candidates do, so one worker holds a
group's whole state. Event time drives everything: the watermark is the newest event time seen
minus `late_events_secs` (moving with the wall clock when no candidate comes, as the correlation
windows' does), terms expire and buckets drop as it passes.

Late events (older than the watermark): a first-seen candidate is still recorded and decided,
since a term that truly never occurred before is news however late it arrives (a copy of a
known term never alerts); a spike candidate whose counting window ended before the watermark is
dropped and counted in `late_dropped`, as the correlation windows do.

Stateful like the correlation windows (window_state.Stateful): snapshot() and restore() for the
stage's checkpoint, restored at start; a rule whose definition changed starts afresh. A rule the
checkpoint does not know is `unlearned`: the stage backfills it from the store
(detectors.history_backfill) before the first batch, so it is quiet on what the store holds.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import orjson

from ctrail.event import Alert, AlertInfo, EventInfo, Rule
from detectors.alerts import ALERT_DATASET, ALERT_MODULE, RULESET
from detectors.correlation import event_watermark, routing
from detectors.first_seen import FirstSeenState
from detectors.history_rules import HistoryRule
from detectors.sigma_detector import SigmaDetector, SigmaDetectorConfig
from detectors.spike import Spike, SpikeState

Clock = Callable[[], float]
State = FirstSeenState | SpikeState


def state_for(rule: HistoryRule, max_groups: int) -> State:
    if rule.type == "new_terms":
        return FirstSeenState(rule.history_secs, max_groups)
    return SpikeState(rule.timespan_secs, rule.history_secs, rule.spike_height,
                      rule.threshold_cur, rule.threshold_ref, max_groups)


class HistoryEngine:
    def __init__(self, rules: Sequence[HistoryRule], late_events_secs: float,
                 production_namespaces: frozenset[str] = frozenset(),
                 max_groups_per_rule: int = 50_000, max_event_ids: int = 100,
                 clock: Clock = time.time) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self.states: dict[str, State] = {r.id: state_for(r, max_groups_per_rule) for r in rules}
        self.unlearned = set(self.rules)        # rules the checkpoint did not know
        self.late_secs = late_events_secs
        self.production = production_namespaces
        self.max_event_ids = max_event_ids
        self.clock = clock
        self.newest = float("-inf")
        self.newest_wall = 0.0
        self.late_dropped = 0
        self._dirty = False

    @property
    def dirty(self) -> bool:
        return self._dirty or any(state.dirty for state in self.states.values())

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        for state in self.states.values():
            state.dirty = value

    def handles(self, candidate: Alert) -> bool:
        return routing(candidate)[0] in self.rules

    def watermark(self, now: float | None = None) -> float:
        return event_watermark(self.newest, self.newest_wall, self.late_secs,
                               self.clock() if now is None else now)

    def observe(self, candidate: Alert) -> list[Alert]:
        """Alerts the candidate raises (at most one)."""
        rule_id, group, _ = routing(candidate)
        rule = self.rules.get(rule_id)
        if rule is None:                        # removed since the candidate was published
            return []
        t = candidate.timestamp.timestamp()
        if t > self.newest:
            self.newest, self.newest_wall = t, self.clock()
        state = self.states[rule_id]
        if isinstance(state, FirstSeenState):
            if state.observe(group, t):
                return [self._alert(rule, group, candidate, t, 1, candidate.alert.event_ids,
                                    f"first seen: {self._term(rule, group)}")]
            return []
        if t + rule.timespan_secs < self.watermark():
            self.late_dropped += 1
            return []
        spike = state.observe(group, t, candidate.event.id, _event_id(candidate))
        if spike is None:
            return []
        return [self._alert(rule, group, candidate, t, spike.count, spike.event_ids,
                            spike_message(rule, spike))]

    def learn(self, candidate: Alert) -> None:
        """Backfill: record the candidate as history, raising nothing."""
        rule_id, group, _ = routing(candidate)
        state = self.states.get(rule_id)
        if state is None:
            return
        t = candidate.timestamp.timestamp()
        if isinstance(state, FirstSeenState):
            state.observe(group, t)
        else:
            state.learn(group, t, candidate.event.id)

    def begin_learning(self, rule_id: str, t: float) -> None:
        """The rule's learning began at event time t (the oldest history its backfill read)."""
        self.states[rule_id].start(t)

    def advance(self, now: datetime) -> list[Alert]:
        watermark = self.watermark(now.timestamp())
        if watermark != float("-inf"):
            for state in self.states.values():
                state.prune(watermark)
        return []

    def _term(self, rule: HistoryRule, group: str) -> str:
        return ", ".join(f"{name}={value}" for name, value in zip(rule.fields,
                                                                   orjson.loads(group)))

    def _alert(self, rule: HistoryRule, group: str, template: Alert, t: float, count: int,
               event_ids: Sequence[str], message: str) -> Alert:
        info = template.event
        namespace = template.kubernetes.namespace if template.kubernetes is not None else None
        severity = rule.severity
        if rule.production_severity is not None and namespace in self.production:
            severity = max(severity, rule.production_severity)
        return Alert(
            timestamp=datetime.fromtimestamp(t, timezone.utc),
            event=EventInfo(id=_id(rule.id, group, info.id), kind="alert",
                            category=info.category, type=info.type, action=rule.id,
                            outcome=info.outcome, dataset=ALERT_DATASET, module=ALERT_MODULE,
                            original="", ingested=info.ingested, severity=int(severity)),
            rule=Rule(id=rule.id, name=rule.title, description=rule.description,
                      reference=rule.reference, ruleset=RULESET),
            threat=rule.threat,
            alert=AlertInfo(severity=severity.word,
                            group_key="|".join([rule.id, *orjson.loads(group)]), count=count,
                            event_ids=tuple(dict.fromkeys(event_ids))[:self.max_event_ids]),
            message=message, user=template.user, source=template.source,
            container=template.container, orchestrator=template.orchestrator,
            kubernetes=template.kubernetes)

    def snapshot(self) -> dict[str, Any]:
        return {"newest": None if self.newest == float("-inf") else self.newest,
                "late_dropped": self.late_dropped,
                "rules": {rule_id: {"signature": self.rules[rule_id].signature,
                                    **state.snapshot()}
                          for rule_id, state in self.states.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("newest") is not None:
            self.newest, self.newest_wall = state["newest"], self.clock()
        self.late_dropped = state.get("late_dropped", 0)
        for rule_id, saved in (state.get("rules") or {}).items():
            rule = self.rules.get(rule_id)
            if rule is None or saved.get("signature") != rule.signature:
                continue                        # removed or redefined: learned afresh
            self.states[rule_id].restore(saved)
            self.unlearned.discard(rule_id)


def spike_message(rule: HistoryRule, spike: Spike) -> str:
    return (f"{spike.count} in {rule.timespan_secs / 60:g} min, against a baseline of "
            f"{spike.baseline:.2f} per {rule.timespan_secs / 60:g} min over the previous "
            f"{rule.history_secs / 3600:g} h")


def _event_id(candidate: Alert) -> str:
    ids = candidate.alert.event_ids
    return ids[0] if ids else candidate.event.id


def _id(rule_id: str, group: str, first: str) -> str:
    raw = f"{rule_id}\x00{group}\x00{first}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def history_engine(detector: SigmaDetector, config: SigmaDetectorConfig) -> HistoryEngine:
    """The engine of the detector's first-seen and spike rules, with the detection settings."""
    return HistoryEngine(detector.history.rules.rules, config.late_events_secs,
                         frozenset(config.production_namespaces),
                         config.history_rules.max_groups_per_rule)
