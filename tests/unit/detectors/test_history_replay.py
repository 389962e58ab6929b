"""First-seen and spike rules over stored history, on both stores: the backfill that makes a
newly added rule quiet on what the store holds, and `ctrail hunt` giving the alerts streaming
gave on the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from ctrail.event import Alert, Event
from detectors.history_replay import backfill, hunt_history, scan_query
from history_support import DAY, HistoryPipeline, denied_at, exec_at, request_at, when
from tests.contract.test_store import STORE_KINDS, empty_store, es_namespace

__all__ = ["es_namespace"]              # the session fixture, used by `store`
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with empty_store(request, tmp_path) as built:
        yield built


def stored(store: Any, events: list[Event]) -> None:
    written = store.write(events)
    assert written.delivered == len(events) and not written.rejected


def test_backfill_makes_a_new_rule_quiet_on_the_combinations_the_store_holds(store: Any) -> None:
    stored(store, [exec_at(0), exec_at(10 * DAY), exec_at(12 * DAY, BOB, "payments"),
                   request_at(11 * DAY, ip="198.51.100.4")])
    pipeline = HistoryPipeline()
    assert pipeline.engine.unlearned == {"CT-NEW-001", "CT-NEW-002", "CT-NEW-003", "CT-SPK-001"}
    learned = backfill(pipeline.engine, pipeline.detector, store,
                       sorted(pipeline.engine.unlearned))
    assert learned == {"CT-NEW-001": 3, "CT-NEW-002": 0, "CT-NEW-003": 4, "CT-SPK-001": 0}
    assert pipeline.engine.unlearned == set()
    # The window ends at the store's newest event (day 12) and the store holds it from day 0
    # on: the rule has learned since day 0, so from day 14 what the store did not hold is new.
    assert pipeline.feed([exec_at(15 * DAY), exec_at(15 * DAY, BOB, "payments"),
                          request_at(15 * DAY, ip="198.51.100.4")], None) == []
    (alert,) = pipeline.feed([exec_at(15 * DAY, CAROL)], "CT-NEW-001")
    assert alert.alert.group_key == f"CT-NEW-001|{CAROL}|shop"


def test_a_store_younger_than_the_window_leaves_the_rule_learning(store: Any) -> None:
    stored(store, [exec_at(10 * DAY), exec_at(12 * DAY, BOB)])
    pipeline = HistoryPipeline()
    backfill(pipeline.engine, pipeline.detector, store, ["CT-NEW-001"])
    assert pipeline.engine.states["CT-NEW-001"].since == when(10 * DAY).timestamp()
    assert pipeline.feed([exec_at(15 * DAY, CAROL)], "CT-NEW-001") == []   # until day 24
    assert pipeline.feed([exec_at(25 * DAY, "dave@example.com")], "CT-NEW-001")


def test_backfill_of_an_empty_store_leaves_the_rule_to_learn_from_its_first_event(
        store: Any) -> None:
    pipeline = HistoryPipeline()
    assert backfill(pipeline.engine, pipeline.detector, store, ["CT-NEW-001"]) == \
        {"CT-NEW-001": 0}
    assert pipeline.feed([exec_at(0), exec_at(1 * DAY, BOB)], "CT-NEW-001") == []


def history() -> list[Event]:
    """Twenty days of execs, requests from new addresses and two bursts of refusals."""
    events = []
    for day in range(20):
        events.append(exec_at(day * DAY + 60, ALICE, "shop"))
        events.append(request_at(day * DAY + 61, ip=f"203.0.113.{day % 3}"))
        events.append(denied_at(day * DAY + 62))
    events += [exec_at(16 * DAY, BOB, "payments"), exec_at(17 * DAY, BOB, "payments"),
               request_at(18 * DAY, CAROL, "198.51.100.1")]
    events += [denied_at(3 * DAY + i * 0.1) for i in range(25)]      # while learning
    events += [denied_at(18 * DAY + i * 0.1) for i in range(25)]     # after
    return sorted(events, key=lambda e: e.timestamp)


def summary(alerts: list[Alert]) -> list[tuple[str, str, str, int]]:
    return [(a.event.id, a.timestamp.isoformat(), a.alert.group_key, a.alert.count)
            for a in alerts]


@pytest.mark.parametrize("rule_id", ["CT-NEW-001", "CT-NEW-003", "CT-SPK-001"])
def test_hunt_gives_the_alerts_streaming_gave_on_the_same_events(store: Any,
                                                                 rule_id: str) -> None:
    events = history()
    streamed = HistoryPipeline().feed(events, rule_id)
    assert streamed                                     # the data set raises some
    stored(store, events)
    detector = HistoryPipeline().detector
    (rule,) = [r for r in detector.history.rules.rules if r.id == rule_id]
    hunted = hunt_history(store, detector, rule)
    assert summary(hunted) == summary(streamed)


def test_hunt_from_a_time_learns_the_window_before_it(store: Any) -> None:
    stored(store, history())
    detector = HistoryPipeline().detector
    (rule,) = [r for r in detector.history.rules.rules if r.id == "CT-NEW-001"]
    # From day 16: days 2-16 are the learning period; bob's first exec on day 16 is new.
    (alert,) = hunt_history(store, detector, rule, time_from=when(16 * DAY - 1))
    assert alert.alert.group_key == f"CT-NEW-001|{BOB}|payments"
    assert hunt_history(store, detector, rule, time_from=when(17 * DAY - 1)) == []


def test_a_store_that_covers_the_window_makes_the_rule_active_at_once(store: Any) -> None:
    stored(store, [exec_at(0, BOB), exec_at(20 * DAY), exec_at(30 * DAY, BOB, "payments")])
    pipeline = HistoryPipeline()
    assert backfill(pipeline.engine, pipeline.detector, store, ["CT-NEW-001"]) == \
        {"CT-NEW-001": 2}                              # bob's day-0 exec is out of the window
    assert pipeline.engine.states["CT-NEW-001"].since == when(16 * DAY).timestamp()
    assert pipeline.feed([exec_at(31 * DAY)], "CT-NEW-001") == []
    (alert,) = pipeline.feed([exec_at(31 * DAY, BOB)], "CT-NEW-001")     # last seen day 0
    assert alert.alert.group_key == f"CT-NEW-001|{BOB}|shop"


def test_the_scan_is_narrowed_to_what_the_base_rules_can_match() -> None:
    detector = HistoryPipeline().detector
    rules = {rule.id: rule for rule in detector.history.rules.rules}
    assert scan_query(detector, rules["CT-NEW-001"]) == \
        '(event.dataset:"kubernetes.audit") AND (kubernetes.audit.objectRef.resource:"pods")'
    assert scan_query(detector, rules["CT-NEW-003"]) == 'event.dataset:"kubernetes.audit"'
