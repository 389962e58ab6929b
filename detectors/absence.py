"""Absence in correlations: Sigma conditions `lt`, `lte` and `eq`, decided when a window closes.

"At least n" can fire the moment it holds; "fewer than n" cannot: one more event may still come.
So an absence correlation (detectors.correlation, `CorrelationRule.absence`) is decided once the
window has closed by event time: when the watermark (the newest event time seen, less the
late allowance; detectors.window_state) has passed its end. Late and out-of-order events that
arrive before that still count.

The window. With several base rules, the first one listed opens the window (CT-COR-009: the
pod deployed to production) and the others are what should follow within the timespan (an
image scan of its digest): the condition counts the followers in [opened, opened + timespan]
(`lt: 1`: none followed). With one base rule, the window opens at its first event and counts
every event of it in the timespan ("fewer than 3 heartbeats in 10 minutes"). Events of the
opening rule that fall inside an open window join it, so three pods of one ReplicaSet started
together raise one alert, not three. value_count counts the distinct values of the counted
events instead.

The alert's time is the window's end (event time) and its id comes from the rule, the group
and the event that opened the window, so a hunt over stored history (detectors.hunt) and the
streaming detector raise the very same alert, and a redelivery raises it again with one id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from detectors.correlation import CorrelationRule


class Counted(Protocol):
    t: float
    rule: str
    value: str | None


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """One window the watermark has passed: the entries that opened it, those it counted,
    and whether the condition held (an alert is due)."""

    opened: list[Counted]
    counted: list[Counted]
    end: float
    fires: bool


def holds(rule: CorrelationRule, counted: Sequence[Counted]) -> bool:
    """The absence condition over what the window counted."""
    if rule.type == "value_count":
        n = len({e.value for e in counted if e.value is not None})
    else:
        n = len(counted)
    if rule.absence == "lt":
        return n < rule.threshold
    if rule.absence == "lte":
        return n <= rule.threshold
    return n == rule.threshold


def opens(rule: CorrelationRule, entry: Counted) -> bool:
    """Whether an entry can open (or join as an opener) a window of the rule."""
    return entry.rule == rule.rules[0]


def close_windows(rule: CorrelationRule, entries: Sequence[Counted], watermark: float
                  ) -> list[ClosedWindow]:
    """The windows of one group (entries in time order, not yet spent) that ended before the
    watermark, oldest first. Their openers are to be spent by the caller; followers are not
    (a later window may count them too)."""
    span = rule.timespan_secs
    single = len(set(rule.rules)) == 1
    openers = [e for e in entries if opens(rule, e)]
    closed: list[ClosedWindow] = []
    while openers and openers[0].t + span < watermark:
        start = openers[0].t
        end = start + span
        opened = [e for e in openers if e.t <= end]
        openers = openers[len(opened):]
        counted = [e for e in entries if start <= e.t <= end and (single or not opens(rule, e))]
        closed.append(ClosedWindow(opened, counted, end, holds(rule, counted)))
    return closed
