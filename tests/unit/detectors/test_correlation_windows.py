"""Correlation windows: event time, late events, duplicates, closing, checkpoint and restore."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from correlation_support import Pipeline, exec_into, forbidden
from detectors import SigmaDetectorConfig, load_rules
from detectors.correlation import load_correlations
from detectors.window_state import Checkpoint, CorrelationEngine, StageState

EPOCH = datetime.fromtimestamp(0, timezone.utc)


def candidates_of(pipeline: Pipeline, events: list) -> list:  # type: ignore[type-arg]
    return [c for event in events for c in pipeline.detector.detect(event)[1]]


def test_events_out_of_order_within_the_late_allowance_still_count() -> None:
    events = [forbidden(m * 0.2) for m in range(10)]
    shuffled = events[5:] + events[:5]          # the first five arrive about a minute late
    (alert,) = [a for a in Pipeline(late_events_secs=120).feed(shuffled)
                if a.rule.id == "CT-COR-003"]
    assert alert.alert.count == 10


def test_events_later_than_the_allowance_are_counted_as_dropped() -> None:
    pipeline = Pipeline(late_events_secs=60)
    pipeline.feed([forbidden(30)])
    assert pipeline.feed([forbidden(m * 0.1) for m in range(10)]) == []
    assert pipeline.engine.late_dropped == 10


def test_a_redelivered_candidate_counts_once() -> None:
    pipeline = Pipeline()
    events = [forbidden(m * 0.1) for m in range(9)]
    pipeline.feed(events + events)
    assert pipeline.feed([forbidden(1)])[0].alert.count == 10


def test_windows_close_as_event_time_advances_and_free_their_state() -> None:
    pipeline = Pipeline(late_events_secs=60)
    pipeline.feed([forbidden(0)])
    assert pipeline.engine.groups
    pipeline.feed([forbidden(7, user="someone-else")])
    pipeline.engine.advance(EPOCH)              # the wall clock stands still in these tests
    assert [key for key in pipeline.engine.groups if key[0] == "CT-COR-003"] == [
        ("CT-COR-003", '["someone-else"]')]


def test_an_idle_stream_releases_windows_by_the_wall_clock() -> None:
    wall = [1000.0]
    pipeline = Pipeline()
    engine = CorrelationEngine(pipeline.detector.correlations.rules, 60, clock=lambda: wall[0])
    for candidate in candidates_of(pipeline, [forbidden(0)]):
        engine.observe(candidate)
    wall[0] += 2 * 3600
    engine.advance(EPOCH + timedelta(seconds=wall[0]))
    assert engine.groups == {}


def test_state_checkpointed_and_restored_continues_the_window(tmp_path: Path) -> None:
    first = Pipeline()
    state = StageState(Checkpoint(tmp_path / "correlate.json"), {"windows": first.engine})
    first.feed([forbidden(m * 0.1) for m in range(6)])
    state.finish([])
    second = Pipeline()
    StageState(Checkpoint(tmp_path / "correlate.json"), {"windows": second.engine})
    (alert,) = second.feed([forbidden(1 + m * 0.1) for m in range(4)])
    assert alert.alert.count == 10


def test_a_checkpoint_is_what_the_state_is_though_unchanged_groups_keep_their_json() -> None:
    """A group keeps its checkpoint JSON while unchanged (most groups, in most batches): after
    every batch, new entries, fired windows and partly pruned groups included, the snapshot
    must equal one made afresh."""
    pipeline = Pipeline(late_events_secs=60)
    engine = pipeline.engine
    batches = [[forbidden(m, user="early")] for m in range(0, 10, 2)] + [
        [forbidden(m * 0.5), exec_into(m * 0.5, "web-0")] for m in range(20, 40)]
    for number, batch in enumerate(batches):    # the early group is pruned while untouched
        pipeline.feed(batch)
        engine.advance(EPOCH)
        kept = orjson.dumps(engine.snapshot())
        for group in engine.groups.values():
            group.saved = None
        assert kept == orjson.dumps(engine.snapshot()), number


def test_the_outbox_of_the_last_batch_is_emitted_again_after_a_restart(tmp_path: Path) -> None:
    pipeline = Pipeline()
    state = StageState(Checkpoint(tmp_path / "c.json"), {"windows": pipeline.engine})
    alerts = pipeline.feed([forbidden(m * 0.1) for m in range(10)])
    assert state.finish(alerts) == alerts
    again = StageState(Checkpoint(tmp_path / "c.json"), {"windows": Pipeline().engine})
    assert [a.event.id for a in again.finish([])] == [alerts[0].event.id]
    assert again.finish([]) == []


def test_a_correlation_of_a_missing_rule_is_reported_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "title: c\nname: C-1\ncorrelation:\n  type: event_count\n  rules: [X-1]\n"
        "  group-by: [user.name]\n  timespan: 5m\n  condition: {gte: 10}\n---\n"
        "title: d\nname: C-2\ncorrelation:\n  type: event_count\n  rules: [CT-K8S-004]\n"
        "  timespan: 5m\n  condition: {lte: 10}\n")
    loaded = load_correlations([tmp_path], load_rules([tmp_path]))
    assert loaded.rules == ()
    reasons = sorted(error.reason for error in loaded.errors)
    assert "refers to X-1, which is not a loaded single-event rule" in reasons[0]
    assert len(reasons) == 2


@pytest.mark.parametrize("kind", ["value_sum", "value_avg"])
def test_unsupported_correlation_types_are_reported(tmp_path: Path, kind: str) -> None:
    (tmp_path / "base.yml").write_text(
        "title: b\nname: B-1\nlogsource: {product: kubernetes, service: audit}\n"
        "detection:\n  sel: {verb: get}\n  condition: sel\n")
    (tmp_path / "c.yml").write_text(
        f"title: c\nname: C-1\ncorrelation:\n  type: {kind}\n  rules: [B-1]\n"
        "  group-by: [user.name]\n  timespan: 5m\n  condition: {gte: 10, field: verb}\n")
    detector = SigmaDetectorConfig(rule_paths=(tmp_path,)).build()
    assert detector.correlations.rules == ()
    assert f"type {kind} is not supported" in detector.correlations.errors[0].reason


def test_group_by_fields_missing_from_an_event_give_no_candidate() -> None:
    pipeline = Pipeline()
    event = exec_into(0, "web-0")
    anonymous = event.model_copy(update={"user": None})
    assert candidates_of(pipeline, [event]) and not candidates_of(pipeline, [anonymous])
