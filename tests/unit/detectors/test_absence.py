"""Absence correlations (Sigma `lt`, `lte`, `eq`; detectors.absence) decided when the window
closes by event time: CT-COR-009 (a production pod with no scan of its digest within 10 min)
through the real audit and Harbor parsers, the entity graph and the windows; out-of-order and
late events; a restart in the middle of a window; and the three operators on a rule of one's own."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from collector.parsers.harbor import HarborParser
from correlation_support import T0, forbidden
from ctrail.event import Alert, Event
from detectors import SigmaDetectorConfig
from detectors.window_state import CorrelationEngine
from test_correlation_graph_rules import DIGEST, IMAGE, Scenario, pod_create, record

OTHER = "sha256:" + "e2" * 32
EPOCH = datetime.fromtimestamp(0, timezone.utc)      # the tests' wall clock starts here
PROD = {"production_namespaces": ("shop",)}     # pod_create's namespace is shop


def deployed(minutes: float, digest: str = DIGEST, name: str = "api") -> Event:
    return pod_create(minutes, image=f"{IMAGE}@{digest}", name=name)


def scanned(minutes: float, digest: str = DIGEST) -> Event:
    """Harbor's SCANNING_COMPLETED webhook for `digest`, at T0 + minutes."""
    payload = {"type": "SCANNING_COMPLETED",
               "occur_at": int((T0 + timedelta(minutes=minutes)).timestamp()),
               "operator": "auto", "event_data": {
                   "resources": [{"digest": digest,
                                  "resource_url": f"registry.corp.example/team/api@{digest}"}],
                   "repository": {"name": "api", "namespace": "team",
                                  "repo_full_name": "team/api", "repo_type": "private"}}}
    (event,) = HarborParser().parse(record(payload))
    return event


class Clocked(Scenario):
    """A Scenario whose windows close by event time as the stage closes them: advance() at
    the end of each batch, with a wall clock the test moves."""

    def __init__(self, late_events_secs: float = 60, **config: Any) -> None:
        super().__init__(**{**PROD, **config})
        self.wall = 0.0
        self.engine = CorrelationEngine(self.detector.correlations.rules, late_events_secs,
                                        clock=lambda: self.wall)

    def batch(self, events: Iterable[Event]) -> list[Alert]:
        found = [a for a in self.feed(events) if a.rule.id == "CT-COR-009"]
        return found + self.engine.advance(datetime.fromtimestamp(self.wall, timezone.utc))


def cor_009(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.rule.id == "CT-COR-009"]


def test_a_deployment_with_no_scan_fires_when_its_window_closes_by_event_time() -> None:
    s = Clocked()
    assert s.batch([deployed(0)]) == []
    assert s.batch([deployed(5, OTHER, "other"), scanned(6, OTHER)]) == []   # still open
    # Event time reaches 11 min: the window (0..10) is 60 s late-allowance short of closed.
    assert s.batch([deployed(10.5, "sha256:" + "f3" * 32, "third")]) == []
    (alert,) = s.batch([deployed(11.1, "sha256:" + "f4" * 32, "fourth")])
    assert alert.timestamp == T0 + timedelta(minutes=10)
    assert alert.alert.group_key == f"CT-COR-009|{DIGEST}"
    assert alert.kubernetes is not None and alert.kubernetes.namespace == "shop"
    assert alert.container is not None and alert.container.image is not None
    assert alert.alert.severity == "medium"
    # OTHER was scanned within its window: nothing, even once every window is closed.
    assert [a.alert.group_key for a in s.engine.close_all()] == [
        "CT-COR-009|sha256:" + "f3" * 32, "CT-COR-009|sha256:" + "f4" * 32]


def test_a_scan_within_the_window_keeps_it_quiet_and_one_after_it_does_not() -> None:
    assert cor_009(Clocked().feed([deployed(0), scanned(9.9)])) == []
    s = Clocked()
    s.feed([deployed(0), scanned(10.5)])
    assert len(s.engine.close_all()) == 1
    s = Clocked()
    s.feed([scanned(-1), deployed(0)])              # a scan before the deployment is not after it
    assert len(s.engine.close_all()) == 1


def test_a_rollout_of_three_pods_of_one_digest_raises_one_alert() -> None:
    s = Clocked()
    s.feed([deployed(0, name="api-1"), deployed(0.1, name="api-2"), deployed(0.2, name="api-3")])
    (alert,) = s.engine.close_all()
    assert alert.alert.count == 3 and len(alert.alert.event_ids) == 3
    # A deployment after that window opens a window of its own.
    s.feed([deployed(30)])
    assert len(s.engine.close_all()) == 1


def test_out_of_order_and_late_scans_count_until_the_window_closes() -> None:
    s = Clocked(late_events_secs=120)
    # The scan arrives first, then the deployment it follows (out of order), then newer events.
    assert s.batch([scanned(4, OTHER), deployed(3.5, OTHER, "other")]) == []
    assert s.batch([deployed(0)]) == []
    # Event time at 11 min: the DIGEST window (0..10) is not closed yet (120 s allowance),
    # and a late scan at 9 min, arriving now, still counts.
    assert s.batch([deployed(11, "sha256:" + "a1" * 32, "x"), scanned(9)]) == []
    assert s.batch([deployed(16, "sha256:" + "a2" * 32, "y")]) == []    # both windows decided
    assert s.engine.late_dropped == 0
    # A scan too late for any open window is dropped and counted, never silently.
    s.batch([scanned(1, "sha256:" + "a1" * 32)])
    assert s.engine.late_dropped == 1


def test_event_time_moves_with_the_wall_clock_when_nothing_arrives() -> None:
    s = Clocked()
    s.batch([deployed(0)])
    s.wall = 600                                     # ten minutes of wall time, no events
    assert s.batch([]) == []
    s.wall = 600 + 60 + 60 + 1       # the window, plus the allowance for events and for idleness
    assert len(s.batch([])) == 1


def test_a_restart_in_the_middle_of_a_window_keeps_it(tmp_path: Path) -> None:
    from detectors.window_state import Checkpoint, StageState

    checkpoint = Checkpoint(tmp_path / "correlate.json")
    s = Clocked()
    state = StageState(checkpoint, {"windows": s.engine})
    opener = deployed(0)
    state.finish(s.batch([opener, deployed(1, OTHER, "other")]))
    # Restarted: the scan of OTHER arrives at the new process, then event time moves on.
    again = Clocked()
    StageState(checkpoint, {"windows": again.engine})
    again.feed([scanned(5, OTHER)])
    (alert,) = again.engine.close_all()
    assert alert.alert.group_key == f"CT-COR-009|{DIGEST}"
    first = Clocked()
    first.feed([opener])
    assert first.engine.close_all()[0].event.id == alert.event.id    # the same alert id


def test_nothing_fires_without_a_production_namespace_configured() -> None:
    s = Clocked(production_namespaces=())
    s.feed([deployed(0)])
    assert s.engine.close_all() == []


@pytest.mark.parametrize(("condition", "count", "fires"), [
    ("lt: 3", 2, True), ("lt: 3", 3, False), ("lte: 3", 3, True), ("lte: 3", 4, False),
    ("eq: 2", 2, True), ("eq: 2", 1, False), ("eq: 2", 3, False)])
def test_lt_lte_eq_on_one_rule_count_its_events_in_the_window(
        write_rule: Callable[..., Path], condition: str, count: int, fires: bool) -> None:
    path = write_rule("    sel:\n        responseStatus.code: 403\n    condition: sel\n",
                      extra="generate: false\n")
    path.write_text(path.read_text() + (
        "---\ntitle: Few refusals\nname: TEST-ABSENT\ncorrelation:\n    type: event_count\n"
        "    rules: [TEST-001]\n    group-by: [user.name]\n    timespan: 5m\n"
        f"    condition:\n        {condition}\nlevel: low\n"))
    detector = SigmaDetectorConfig(rule_paths=(path,)).build()
    assert detector.correlations.errors == ()
    engine = CorrelationEngine(detector.correlations.rules, 0, clock=lambda: 0.0)
    for i in range(count):
        for candidate in detector.detect(forbidden(i * 0.5))[1]:
            assert engine.observe(candidate) == []
    # The window (0..5 min) closes when event time passes it; one event at 6 min does it.
    closing = [a for c in detector.detect(forbidden(6, user="someone-else"))[1]
               for a in engine.observe(c)] + engine.advance(EPOCH)
    assert [a.rule.id for a in closing] == (["TEST-ABSENT"] if fires else [])


def test_value_sum_is_still_refused_and_gte_rules_are_unchanged(
        write_rule: Callable[..., Path]) -> None:
    absent = {r.id: r.absence for r in SigmaDetectorConfig().build().correlations.rules}
    assert absent["CT-COR-009"] == "lt" and absent["CT-COR-003"] is None
    path = write_rule("    sel:\n        verb: get\n    condition: sel\n")
    path.write_text(path.read_text() + (
        "---\ntitle: Sum\nname: TEST-SUM\ncorrelation:\n    type: value_sum\n"
        "    rules: [TEST-001]\n    group-by: [user.name]\n    timespan: 5m\n"
        "    condition:\n        gte: 3\n        field: verb\nlevel: low\n"))
    (error,) = SigmaDetectorConfig(rule_paths=(path,)).build().correlations.errors
    assert "not supported" in error.reason


def test_the_correlate_stage_closes_a_window_with_no_new_input(
        tmp_path: Path, write_rule: Callable[..., Path]) -> None:
    """The stage's idle hook: event time moves with the wall clock when nothing arrives, and
    the alert of a window that closed is published without waiting for another candidate."""
    import time

    import orjson

    from ctrail.bus import RAW
    from ctrail.bus.codec import RawEntry
    from ctrail.runtime.pipeline import Pipeline
    from ctrail.settings import Settings
    from tests.hunt_replay import exec_into

    rules = write_rule("    sel:\n        objectRef.subresource: exec\n    condition: sel\n",
                       extra="generate: false\n", name="rules.yml")
    rules.write_text(rules.read_text() + (
        "---\ntitle: Exec with no follow-up\nname: TEST-QUIET\ncorrelation:\n"
        "    type: event_count\n    rules: [TEST-001]\n    group-by: [user.name]\n"
        "    timespan: 1s\n    condition:\n        lt: 2\nlevel: low\n"))
    settings = Settings(data_dir=tmp_path / "data",  # type: ignore[arg-type]
                        detection={"rule_paths": [str(rules)], "late_events_secs": 0.5},
                        watch={"enabled": False})
    pipeline = Pipeline(settings, ("process", "correlate", "store"))
    try:
        now = datetime.now(timezone.utc)
        record = exec_into(0, "alice@example.com", "web-0")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record["requestReceivedTimestamp"] = record["stageTimestamp"] = stamp
        entry = RawEntry("k8s-audit", "test", "test:1", now, orjson.dumps(record))
        producer = pipeline.bus.producer()
        producer.send(RAW, key=entry.key, value=entry.encode())
        producer.flush()
        pipeline.drain()
        store = pipeline.context.store()
        assert store.search('rule.id:"TEST-QUIET"', "alerts", None, None, 10) == []
        deadline = time.monotonic() + 15
        while not (found := store.search('rule.id:"TEST-QUIET"', "alerts", None, None, 10)):
            assert time.monotonic() < deadline, "the window was never closed"
            pipeline.step()                              # no input: each stage's idle hook
            time.sleep(0.1)
        assert found[0]["alert"]["group_key"] == "TEST-QUIET|alice@example.com"
    finally:
        pipeline.close()


@pytest.mark.parametrize(("annotation", "digests"), [
    ('{"r.example/a@sha256:' + "1" * 64 + '":"pass","r.example/b:1":"pass"}', ["sha256:" + "1" * 64]),
    ('{"r.example/a@sha256:' + "2" * 64 + '":true}', ["sha256:" + "2" * 64]),     # Kyverno < 1.9
    ('{"r.example/a@sha256:' + "3" * 64 + '":"fail"}', []),
    ("not json", []), ('["r.example/a@sha256:' + "4" * 64 + '"]', [])])
def test_the_digests_kyverno_verified_at_admission(annotation: str, digests: list[str]) -> None:
    from detectors.derived import DerivedContext, admitted_image_digests

    audit = {"responseObject": {"metadata": {"annotations": {
        "kyverno.io/verify-images": annotation}}}}
    assert admitted_image_digests(deployed(0), audit, DerivedContext()) == digests
