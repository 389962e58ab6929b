"""Spike rules (CT-SPK-001) on event time: the baseline learned first, the ratio and the minimum
count, one alert per window, out-of-order, late and redelivered events, and a restart in the
middle of a window."""

from __future__ import annotations

from pathlib import Path

from detectors.window_state import Checkpoint, StageState
from history_support import HistoryPipeline, denied_at

WEB = "system:serviceaccount:shop:web"
LEARNED = 6 * 60 + 10                   # minutes: a whole baseline window and a counting window


def burst(start: float, count: int, user: str = WEB, code: int = 403) -> list:  # type: ignore[type-arg]
    """`count` denied requests within 5 minutes from `start`."""
    return [denied_at(start + i * 5 / count, user, code) for i in range(count)]


def test_a_burst_after_the_baseline_was_learned_alerts_once() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([denied_at(0)])                        # the rule starts learning here
    (alert,) = pipeline.feed(burst(LEARNED, 30), "CT-SPK-001")
    assert alert.alert.count == 20 and alert.alert.group_key == f"CT-SPK-001|{WEB}"
    assert len(alert.alert.event_ids) == 20
    assert alert.message is not None and alert.message.startswith("20 in 10 min")
    # The same window (and one overlapping it) raises nothing more.
    assert pipeline.feed(burst(LEARNED + 6, 30), "CT-SPK-001") == []
    assert pipeline.feed(burst(LEARNED + 30, 30), "CT-SPK-001")         # a new window


def test_nothing_fires_before_a_whole_baseline_window_was_learned() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([denied_at(0)])
    assert pipeline.feed(burst(60, 50), "CT-SPK-001") == []


def test_a_principal_that_is_always_denied_a_lot_does_not_spike() -> None:
    pipeline = HistoryPipeline()
    # 6 h of 5 refusals a minute: a baseline of 50 per 10 minutes.
    steady = [denied_at(m + s / 5) for m in range(LEARNED - 10) for s in range(5)]
    assert pipeline.feed(steady, "CT-SPK-001") == []
    assert pipeline.feed(burst(LEARNED, 100), "CT-SPK-001") == []     # 2x is not 10x


def test_a_burst_below_the_minimum_count_does_not_alert_but_21_401s_do() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([denied_at(0, "mallory@example.com")])
    assert pipeline.feed(burst(LEARNED, 19, "mallory@example.com"), "CT-SPK-001") == []
    (alert,) = pipeline.feed(burst(LEARNED + 5, 2, "mallory@example.com", code=401),
                             "CT-SPK-001")
    assert alert.alert.count == 20


def test_out_of_order_events_within_the_late_allowance_count() -> None:
    pipeline = HistoryPipeline(late_events_secs=120)
    pipeline.feed([denied_at(0)])
    events = burst(LEARNED, 20)
    assert pipeline.feed(events[10:], "CT-SPK-001") == []
    (alert,) = pipeline.feed(events[:10], "CT-SPK-001")             # up to 2.5 min late
    assert alert.alert.count == 20


def test_events_whose_window_has_closed_are_dropped_and_counted() -> None:
    pipeline = HistoryPipeline(late_events_secs=60)
    pipeline.feed([denied_at(0), denied_at(LEARNED + 60)])
    assert pipeline.feed(burst(LEARNED, 30), "CT-SPK-001") == []
    assert pipeline.engine.late_dropped == 30


def test_a_redelivered_candidate_counts_once() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([denied_at(0)])
    events = burst(LEARNED, 19)
    assert pipeline.feed(events + events, "CT-SPK-001") == []
    assert pipeline.feed([denied_at(LEARNED + 6)], "CT-SPK-001")


def test_a_restart_in_the_middle_of_a_window_keeps_its_count(tmp_path: Path) -> None:
    first = HistoryPipeline()
    state = StageState(Checkpoint(tmp_path / "correlate.json"), {"history": first.engine})
    first.feed([denied_at(0)] + burst(LEARNED, 12))
    state.finish([])
    second = HistoryPipeline()
    StageState(Checkpoint(tmp_path / "correlate.json"), {"history": second.engine})
    (alert,) = second.feed([denied_at(LEARNED + 6 + i * 0.1) for i in range(8)], "CT-SPK-001")
    assert alert.alert.count == 20


def test_old_buckets_and_idle_groups_are_released_as_event_time_advances() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([denied_at(0, "someone@example.com")])
    pipeline.feed([denied_at(LEARNED + 24 * 60)])
    pipeline.advance()
    groups = pipeline.engine.states["CT-SPK-001"].groups
    assert list(groups) == [f'["{WEB}"]']
