"""First-seen (new_terms) state of one rule: the terms it knows, bounded, on event time.

A term is a combination of field values (user x namespace). It is new at event time t when it
was never seen, or last seen more than the history window before t (Elastic's new_terms: a term
outside the history window is new again). A new term raises an alert only once the rule has
learned for one history window: t >= since + history, where `since` is the event time its
learning began (the oldest event its backfill read, else its first candidate).

Bounded: terms are kept in least-recently-seen order (an LRU by arrival); the oldest are
forgotten when the rule holds more than `max_terms` (counted in `evicted`), and terms not seen
for a history window expire as event time advances. Last-seen times are kept to
LAST_SEEN_RESOLUTION_SECS, so a term seen again and again does not make the state dirty (and
rewritten at every batch): it only decides expiry, days away.

Out of order: a term counts as known whenever its last sighting is within the history window of
t, earlier or later than t, so the late copy of a known term never alerts; its first-seen time
moves back to the earliest event time seen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from detectors.learning import LearningState

LAST_SEEN_RESOLUTION_SECS: Final = 3600.0


class FirstSeenState(LearningState):
    def __init__(self, history_secs: float, max_terms: int) -> None:
        super().__init__(history_secs)              # it learns for one history window
        self.history = history_secs
        self.max_terms = max_terms
        self.terms: OrderedDict[str, list[float]] = OrderedDict()   # group -> [first, last]

    def observe(self, group: str, t: float) -> bool:
        """Record the term at event time t; True when it is new there and past learning."""
        self.start(t)
        known = self.terms.get(group)
        new = known is None or t - known[1] > self.history
        if known is None or new:
            self.terms[group] = [t, t]
            self.dirty = True
        else:
            if t < known[0]:
                known[0] = t
                self.dirty = True
            if t - known[1] > LAST_SEEN_RESOLUTION_SECS:
                known[1] = t
                self.dirty = True
        self.terms.move_to_end(group)
        self.bound(self.terms, self.max_terms)
        until = self.learning_until()
        return new and until is not None and t >= until

    def prune(self, watermark: float) -> None:
        """Forget terms last seen more than a history window before the watermark, from the
        least recently seen on (a term seen out of order may wait for the next prune)."""
        horizon = watermark - self.history
        while self.terms:
            group, (_first, last) = next(iter(self.terms.items()))
            if last >= horizon:
                return
            del self.terms[group]
            self.dirty = True

    def snapshot(self) -> dict[str, Any]:
        return {"since": self.since, "evicted": self.evicted,
                "terms": [[group, first, last] for group, (first, last) in self.terms.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.since = state.get("since")
        self.evicted = state.get("evicted", 0)
        self.terms = OrderedDict((group, [first, last])
                                 for group, first, last in state.get("terms", ()))
