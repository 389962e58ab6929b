"""Spike state of one rule: counts per group on event time, against the group's own baseline.

Counts are kept in buckets of a tenth of the rule's timespan, so the counting window slides by
that step (a burst across a bucket boundary still counts whole). For an event at bucket b the
window is the last ten buckets up to b, and the baseline the buckets of the baseline window just
before it; the baseline average is per timespan (its count x timespan / baseline window).

It fires when count >= threshold_cur, the baseline's count >= threshold_ref and
count > spike_height x baseline average (ElastAlert 2's spike, `spike_type: up`), decided as
soon as it holds (counts only grow), once the rule has learned a whole baseline window before
the counting window, and then not again for that group until a window that does not overlap
the one that fired. A candidate id seen in the last timespan is not counted again (at-least-once
redelivery; ResponseStarted and ResponseComplete of one request share an id).

Bounded: groups in least-recently-seen order, at most `max_groups` (the oldest forgotten and
counted in `evicted`); buckets older than the baseline window before the watermark are dropped.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from detectors.learning import LearningState

STEPS: Final = 10                   # buckets per timespan
MAX_IDS_PER_GROUP: Final = 10_000   # candidate ids kept for deduplication per group


@dataclass
class SpikeGroup:
    buckets: dict[int, int] = field(default_factory=dict)
    ids: dict[str, float] = field(default_factory=dict)     # candidate id -> event time
    event_ids: dict[str, float] = field(default_factory=dict)  # contributing events
    quiet_until: int = -(2**62)         # the first bucket that may fire again


@dataclass(frozen=True, slots=True)
class Spike:
    count: int
    baseline: float                     # average per timespan
    window_start: float
    event_ids: tuple[str, ...]


class SpikeState(LearningState):
    def __init__(self, timespan_secs: float, baseline_secs: float, height: float,
                 threshold_cur: int, threshold_ref: int, max_groups: int) -> None:
        super().__init__(baseline_secs)             # it learns for one baseline window
        self.timespan = timespan_secs
        self.step = timespan_secs / STEPS
        self.baseline_buckets = max(1, math.ceil(baseline_secs / self.step))
        self.baseline_secs = baseline_secs
        self.height, self.cur, self.ref = height, threshold_cur, threshold_ref
        self.max_groups = max_groups
        self.groups: OrderedDict[str, SpikeGroup] = OrderedDict()

    def learn(self, group: str, t: float, candidate_id: str) -> SpikeGroup | None:
        """Count the candidate; None when it was counted already."""
        self.start(t)
        state = self.groups.get(group)
        if state is None:
            state = self.groups[group] = SpikeGroup()
        self.groups.move_to_end(group)
        self.bound(self.groups, self.max_groups)
        if candidate_id in state.ids:
            return None
        state.ids[candidate_id] = t
        if len(state.ids) > MAX_IDS_PER_GROUP:
            del state.ids[next(iter(state.ids))]
        b = math.floor(t / self.step)
        state.buckets[b] = state.buckets.get(b, 0) + 1
        self.dirty = True
        return state

    def observe(self, group: str, t: float, candidate_id: str, event_id: str) -> Spike | None:
        """Count the candidate at event time t; the spike it completes, if any."""
        state = self.learn(group, t, candidate_id)
        if state is None:
            return None
        state.event_ids[event_id] = t
        if len(state.event_ids) > MAX_IDS_PER_GROUP:
            del state.event_ids[next(iter(state.event_ids))]
        b = math.floor(t / self.step)
        # In order, the one window to test ends at the new bucket; a late candidate also
        # completes the windows ending after it, up to the group's newest bucket.
        for end in range(b, min(b + STEPS, max(state.buckets) + 1)):
            spike = self._spike(state, end)
            if spike is not None:
                return spike
        return None

    def _spike(self, state: SpikeGroup, end: int) -> Spike | None:
        first = end - STEPS + 1                 # the counting window's first bucket
        learned_from = (first - self.baseline_buckets) * self.step
        if end < state.quiet_until or self.since is None or learned_from < self.since - 1e-6:
            return None
        count = sum(state.buckets.get(k, 0) for k in range(first, end + 1))
        reference = sum(n for k, n in state.buckets.items()
                        if first - self.baseline_buckets <= k < first)
        average = reference * self.timespan / self.baseline_secs
        if count < self.cur or reference < self.ref or count <= self.height * average:
            return None
        state.quiet_until = end + STEPS
        start, stop = first * self.step, (end + 1) * self.step
        ids = tuple(sorted((i for i, at in state.event_ids.items() if start <= at < stop),
                           key=lambda i: state.event_ids[i]))
        return Spike(count, average, start, ids)

    def prune(self, watermark: float) -> None:
        oldest = math.floor((watermark - self.timespan) / self.step) - self.baseline_buckets
        recent = watermark - 2 * self.timespan
        for group, state in list(self.groups.items()):
            kept = {k: n for k, n in state.buckets.items() if k >= oldest}
            if len(kept) != len(state.buckets):
                state.buckets = kept
                self.dirty = True
            state.ids = {i: at for i, at in state.ids.items() if at >= recent}
            state.event_ids = {i: at for i, at in state.event_ids.items() if at >= recent}
            if not kept:
                del self.groups[group]

    def snapshot(self) -> dict[str, Any]:
        return {"since": self.since, "evicted": self.evicted,
                "groups": [[group, [[k, n] for k, n in s.buckets.items()], s.ids, s.event_ids,
                            s.quiet_until] for group, s in self.groups.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.since = state.get("since")
        self.evicted = state.get("evicted", 0)
        for group, buckets, ids, event_ids, quiet in state.get("groups", ()):
            self.groups[group] = SpikeGroup({int(k): n for k, n in buckets}, dict(ids),
                                            dict(event_ids), quiet)
