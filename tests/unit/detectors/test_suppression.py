"""Suppression: the first alert of a key at once, repeats folded into one update with a count."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from correlation_support import exec_into
from detectors import SigmaDetectorConfig
from detectors.suppression import SuppressionConfig, Suppressor

EPOCH = datetime.fromtimestamp(0, timezone.utc)


def exec_alerts(minutes: list[float], pod: str = "web-0") -> list:  # type: ignore[type-arg]
    detector = SigmaDetectorConfig().build()
    return [a for m in minutes for a in detector.observe(exec_into(m, pod))
            if a.rule.id == "CT-K8S-004"]


def suppressor(window_secs: float = 600) -> Suppressor:
    return SuppressionConfig(window_secs=window_secs).build(clock=lambda: 0.0)


def test_the_first_alert_passes_and_repeats_become_one_update_when_the_window_closes() -> None:
    first, *repeats = exec_alerts([0, 1, 2, 3])
    s = suppressor()
    assert s.admit(first) == [first]
    assert [s.admit(alert) for alert in repeats] == [[], [], []]
    assert s.suppressed == 3
    assert s.advance(EPOCH) == []                   # the window is still open
    (later,) = exec_alerts([11])
    update, passed = s.admit(later)
    assert passed == later
    assert update.alert.count == 4 and update.alert.group_key == first.alert.group_key
    assert update.event.id != first.event.id
    assert set(update.alert.event_ids) == {i for a in [first, *repeats] for i in a.alert.event_ids}


def test_an_idle_window_is_closed_by_the_wall_clock() -> None:
    wall = [100.0]
    s = SuppressionConfig(window_secs=60).build(clock=lambda: wall[0])
    first, repeat = exec_alerts([0, 0.5])
    s.admit(first)
    s.admit(repeat)
    assert s.advance(EPOCH + timedelta(seconds=wall[0])) == []
    (update,) = s.advance(EPOCH + timedelta(seconds=wall[0] + 121))
    assert update.alert.count == 2


def test_other_keys_are_not_suppressed_and_a_lone_alert_gives_no_update() -> None:
    s = suppressor()
    (web,) = exec_alerts([0])
    (db,) = exec_alerts([1], pod="db-0")
    assert s.admit(web) == [web] and s.admit(db) == [db]
    assert s.advance(EPOCH + timedelta(days=1)) == []


def test_a_redelivered_alert_is_neither_counted_twice_nor_lost() -> None:
    first, repeat = exec_alerts([0, 1])
    s = suppressor()
    assert s.admit(first) == [first] and s.admit(first) == [first]
    assert s.admit(repeat) == [] and s.admit(repeat) == []
    assert s.windows and next(iter(s.windows.values())).count == 2


def test_state_survives_a_snapshot_and_restore() -> None:
    first, repeat = exec_alerts([0, 1])
    s = suppressor()
    s.admit(first)
    s.snapshot()              # a window keeps its checkpoint JSON until it changes
    s.admit(repeat)
    restored = suppressor()
    # As the checkpoint file carries it: the snapshot holds pre-encoded JSON (orjson.Fragment).
    restored.restore(orjson.loads(orjson.dumps(s.snapshot())))
    (update,) = restored.advance(EPOCH + timedelta(days=1))
    assert update.alert.count == 2 and update.alert.group_key == first.alert.group_key
