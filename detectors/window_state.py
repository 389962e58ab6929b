"""Correlation windows on event time, and the checkpoint that carries them over a restart.

Windows. Each (correlation, group-by values) keeps its recent candidates as entries ordered by
event time. A window is any span of the rule's timespan: when a candidate arrives, the windows
that could now hold the condition are tested, and the first one that does fires one alert (with
the count and a bounded list of the contributing event ids). Its entries are then used up, so
the next alert for that group needs new events: one alert per window per group. Deciding as
soon as `gte` holds means no alert waits for a window to end.

Event time and late events. The watermark is the newest event time seen minus
`late_events_secs`; a candidate whose every window ended before the watermark is too late and
counted in `late_dropped`, and entries no window ending after the watermark can use are pruned
(that is how windows close as time advances). When no candidate has arrived for
`late_events_secs` of wall time, event time is taken to move with the wall clock, so idle groups
are still released. Candidates are deduplicated by their id (rule + auditID), so an at-least-once
redelivery, or ResponseStarted and ResponseComplete of one request, count once.

Checkpoint. The state is a JSON file in the data dir, replaced atomically (temporary file, fsync,
rename, fsync of the directory). StageState writes it at the end of every batch that changed it,
inside the handler: the runner publishes, flushes and only then commits the input, so the
committed offset is never ahead of the checkpointed windows. A kill -9 between the checkpoint
and the commit redelivers the batch: its candidates are duplicates (ignored) and the alerts
that batch fired are kept in the checkpoint's outbox and emitted again on restart, with the same
ids, so the store keeps one and notifications deduplicate by group key.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import orjson

from ctrail.bus import ALERTS
from ctrail.bus.codec import decode, encode
from ctrail.durable import write_atomic
from ctrail.event import Alert, AlertInfo, EventInfo, Rule
from detectors.absence import close_windows, opens
from detectors.alerts import ALERT_DATASET, ALERT_MODULE, RULESET
from detectors.correlation import CorrelationRule, event_watermark, routing

Clock = Callable[[], float]


@dataclass(slots=True)
class Entry:
    t: float                 # event time, epoch seconds
    rule: str                # the base rule that matched
    id: str                  # the candidate's id: deduplicates redeliveries
    event_id: str
    value: str | None        # value_count: the counted value
    used: bool = False       # already part of a fired window


class Group:
    """Live entries in time order, and the ids already spent (used by a fired window, or
    superseded), kept until their time leaves every window so a redelivery still counts once."""

    __slots__ = ("entries", "spent", "template", "oldest_spent", "saved")

    def __init__(self, template: Alert) -> None:
        self.entries: list[Entry] = []
        self.spent: dict[str, Entry] = {}
        self.template = template          # the latest candidate: the entities the alert names
        self.oldest_spent = float("inf")  # the earliest time in `spent`: pruning it is due
        # The group's checkpoint JSON while it is unchanged: a batch checkpoints every group,
        # and most groups did not change in it (see `changed`).
        self.saved: orjson.Fragment | None = None

    def changed(self) -> None:
        """Called on every change: the next checkpoint writes the group again."""
        self.saved = None

    def seen(self, candidate_id: str) -> bool:
        return candidate_id in self.spent or any(e.id == candidate_id for e in self.entries)

    def spend(self, entries: Sequence[Entry]) -> None:
        gone = {id(e) for e in entries}
        for entry in entries:
            entry.used = True
            self.spent[entry.id] = entry
            self.oldest_spent = min(self.oldest_spent, entry.t)
        self.entries = [e for e in self.entries if id(e) not in gone]
        self.changed()

    def prune(self, horizon: float) -> bool:
        """Forget entries and spent ids older than `horizon`; whether anything went."""
        stale_entries = bool(self.entries) and self.entries[0].t < horizon    # in time order
        if not stale_entries and self.oldest_spent >= horizon:
            return False
        self.entries = [e for e in self.entries if e.t >= horizon]
        self.spent = {i: e for i, e in self.spent.items() if e.t >= horizon}
        self.oldest_spent = min((e.t for e in self.spent.values()), default=float("inf"))
        self.changed()
        return True

    def snapshot(self, rule: str, group: str) -> orjson.Fragment:
        if self.saved is None:
            self.saved = orjson.Fragment(orjson.dumps([
                rule, group, orjson.Fragment(encode(self.template)),
                [[e.t, e.rule, e.id, e.event_id, e.value, e.used]
                 for e in (*self.entries, *self.spent.values())]]))
        return self.saved


class CorrelationEngine:
    """The windows of every correlation rule for the candidates routed to this worker."""

    def __init__(self, rules: Sequence[CorrelationRule], late_events_secs: float,
                 max_event_ids: int = 100, clock: Clock = time.time) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self.late_secs = late_events_secs
        self.max_event_ids = max_event_ids
        self.clock = clock
        self.groups: dict[tuple[str, str], Group] = {}
        self.newest = float("-inf")       # newest event time seen
        self.newest_wall = 0.0            # wall time when it was seen
        self.late_dropped = 0
        self.dirty = False

    def watermark(self, now: float | None = None) -> float:
        return event_watermark(self.newest, self.newest_wall, self.late_secs,
                               self.clock() if now is None else now)

    def observe(self, candidate: Alert) -> list[Alert]:
        rule_id, group_json, value = routing(candidate)
        rule = self.rules.get(rule_id)
        if rule is None:                  # a rule removed since the candidate was published
            return []
        t = candidate.timestamp.timestamp()
        if t > self.newest:
            self.newest, self.newest_wall = t, self.clock()
        if t + rule.timespan_secs < self.watermark():
            self.late_dropped += 1
            return []
        group = self.groups.setdefault((rule_id, group_json), Group(candidate))
        if group.seen(candidate.event.id):
            return []
        entry = Entry(t, candidate.rule.id, candidate.event.id, candidate.alert.event_ids[0]
                      if candidate.alert.event_ids else candidate.event.id, value)
        in_order = not group.entries or t >= group.entries[-1].t
        bisect.insort(group.entries, entry, key=lambda e: e.t)
        group.changed()
        self.dirty = True
        if rule.absence is not None:
            # Decided when the window closes (advance); the alert names what opened it.
            if opens(rule, entry):
                group.template = candidate
            return []
        group.spend(superseded(rule, group.entries, entry))
        group.template = candidate
        window = self._satisfied(rule, group.entries, t, in_order)
        if window is None:
            return []
        group.spend(window)
        return [self._alert(rule, group_json, window, group.template)]

    def advance(self, now: datetime) -> list[Alert]:
        """Close windows the watermark has passed: decide absence windows (their alerts are
        returned), prune their entries and empty groups."""
        return self._advance_to(self.watermark(now.timestamp()))

    def close_all(self) -> list[Alert]:
        """Close every window, as if event time had moved past them all: the end of a hunt
        over stored history (no later event can come)."""
        return self._advance_to(float("inf"))

    def _advance_to(self, watermark: float) -> list[Alert]:
        due: list[Alert] = []
        for (rule_id, group_json), group in self.groups.items():
            rule = self.rules.get(rule_id)
            if rule is None or rule.absence is None:
                continue
            for window in close_windows(rule, group.entries, watermark):
                group.spend(window.opened)          # type: ignore[arg-type]  # Entries
                self.dirty = True
                if window.fires:
                    due.append(self._alert(rule, group_json, [*window.opened, *window.counted],
                                           group.template, at=window.end))
        for key, group in list(self.groups.items()):
            rule = self.rules.get(key[0])
            # A rule removed since: its groups go at once.
            if group.prune(watermark - rule.timespan_secs if rule else float("inf")):
                self.dirty = True
            if not group.entries and not group.spent:
                del self.groups[key]
        return due

    @staticmethod
    def _satisfied(rule: CorrelationRule, entries: list[Entry], t: float,
                   in_order: bool) -> list[Entry] | None:
        """The earliest window holding the new entry's time in which the condition holds.
        In order (the usual case) that is the one ending at the new entry: every condition
        only gets truer with more entries, and that window holds all the others."""
        if in_order:
            window = entries[bisect.bisect_left(entries, t - rule.timespan_secs,
                                                key=lambda e: e.t):]
            return window if rule.satisfied(window) else None
        live = entries
        for i, start in enumerate(live):
            if start.t < t - rule.timespan_secs:
                continue
            if start.t > t:
                break
            window = [e for e in live[i:] if e.t <= start.t + rule.timespan_secs]
            if rule.satisfied(window):
                return window
        return None

    def _alert(self, rule: CorrelationRule, group_json: str, window: Sequence[Any],
               template: Alert, at: float | None = None) -> Alert:
        """`at`: the alert's event time when it is not the window's last entry's (the end of
        an absence window)."""
        group = orjson.loads(group_json)
        info = template.event
        return Alert(
            timestamp=datetime.fromtimestamp(window[-1].t if at is None else at, timezone.utc),
            event=EventInfo(id=_id(rule.id, group_json, window[0].id), kind="alert",
                            category=info.category, type=info.type, action=rule.id,
                            outcome=info.outcome, dataset=ALERT_DATASET, module=ALERT_MODULE,
                            original="", ingested=info.ingested, severity=int(rule.severity)),
            rule=Rule(id=rule.id, name=rule.title, description=rule.description,
                      reference=rule.reference, ruleset=RULESET),
            threat=rule.threat,
            alert=AlertInfo(severity=rule.severity.word, group_key="|".join([rule.id, *group]),
                            count=len(window), event_ids=tuple(dict.fromkeys(
                                e.event_id for e in window))[:self.max_event_ids]),
            user=template.user, source=template.source, container=template.container,
            orchestrator=template.orchestrator, kubernetes=template.kubernetes)

    def snapshot(self) -> dict[str, Any]:
        return {"newest": self.newest if self.groups else None, "late_dropped": self.late_dropped,
                "groups": [g.snapshot(rule, group) for (rule, group), g in self.groups.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("newest") is not None:
            # Wall time restarts now: the late allowance is granted again after a restart.
            self.newest, self.newest_wall = state["newest"], self.clock()
        self.late_dropped = state.get("late_dropped", 0)
        for rule, group, template, entries in state.get("groups", ()):
            restored = Group(decode(ALERTS, orjson.dumps(template)))  # type: ignore[arg-type]
            for entry in map(lambda fields: Entry(*fields), entries):
                if entry.used:
                    restored.spent[entry.id] = entry
                    restored.oldest_spent = min(restored.oldest_spent, entry.t)
                else:
                    restored.entries.append(entry)
            self.groups[(rule, group)] = restored


PER_BASE_RULE = 64


def superseded(rule: CorrelationRule, entries: list[Entry], new: Entry) -> list[Entry]:
    """Live entries the new one makes useless, so a group's entries stay few: for value_count
    an older entry with the same value (only distinct values count); for temporal rules all
    but the newest PER_BASE_RULE entries of a base rule (a window needs one of each)."""
    if rule.type == "value_count":
        return [e for e in entries if e.value == new.value and e is not new]
    if rule.type in ("temporal", "temporal_ordered"):
        same = [e for e in entries if e.rule == new.rule]
        return same[:-PER_BASE_RULE] if len(same) > PER_BASE_RULE else []
    return []


def _id(rule_id: str, group_json: str, first: str) -> str:
    raw = f"{rule_id}\x00{group_json}\x00{first}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class Stateful(Protocol):
    dirty: bool

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class Checkpoint:
    """One JSON file, replaced atomically; a torn write leaves the previous one in place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            loaded = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def save(self, state: dict[str, Any]) -> None:
        write_atomic(self.path, orjson.dumps(state))


class StageState:
    """A stage's stateful parts (windows, suppression) restored at start, checkpointed at the
    end of each batch that changed them, with the batch's alerts as the outbox."""

    def __init__(self, checkpoint: Checkpoint, parts: dict[str, Stateful]) -> None:
        self.checkpoint = checkpoint
        self.parts = parts
        state = checkpoint.load()
        for name, part in parts.items():
            part.restore(state.get(name) or {})
        # Alerts of the batch in flight at the last checkpoint: emitted again (same ids).
        self.pending: list[Alert] = []
        for doc in state.get("outbox", ()):
            alert = decode(ALERTS, orjson.dumps(doc))
            assert isinstance(alert, Alert)     # what decode() gives for ctrail.alerts
            self.pending.append(alert)

    def finish(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts to publish for this batch; checkpoints first when anything changed."""
        out = [*self.pending, *alerts]
        if out or any(part.dirty for part in self.parts.values()):
            self.pending = out          # a save that fails (a full disk) keeps them for the retry
            self.save(out)
        self.pending = []
        return out

    def save(self, outbox: Sequence[Alert] = ()) -> None:
        state: dict[str, Any] = {name: part.snapshot() for name, part in self.parts.items()}
        state["outbox"] = [orjson.Fragment(encode(alert)) for alert in outbox]
        self.checkpoint.save(state)
        for part in self.parts.values():
            part.dirty = False
