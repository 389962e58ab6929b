"""The behaviour cases of rules decided over time rather than on one event: detectors/rules/
tests/*.yml with `type: correlation` (CT-COR-009: records through the real parsers, the entity
graph, the detector and the correlation windows, then every window closed) and `type: watch`
(CT-OPS-001..004: steps at wall-clock seconds, the pipeline's self-watch checking after each;
the step format is described in ct-ops-001.yml)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson
import pytest
import yaml

from collector import PARSERS
from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Alert
from ctrail.runtime.self_watch import Problems, SelfWatch, WatchConfig
from ctrail.runtime.telemetry import Sample, Telemetry
from detector_support import NOW, parse_line
from detectors import PACKAGED_RULES, SigmaDetectorConfig
from detectors.ops_rules import OPS_RULES
from detectors.window_state import Checkpoint, CorrelationEngine
from enrich import EnrichConfig

SPECS = [(path, yaml.safe_load(path.read_text()))
         for path in sorted((PACKAGED_RULES / "tests").glob("*.yml"))]
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc).timestamp()


def cases(kind: str) -> list[Any]:
    return [pytest.param(spec["rule"], spec.get("config", {}), case,
                         id=f"{path.stem}: {case['name']}")
            for path, spec in SPECS if spec.get("type") == kind for case in spec["cases"]]


def check(case: dict[str, Any], alerts: list[Alert]) -> None:
    started = [a for a in alerts if "end" not in a.event.type]
    ended = [a for a in alerts if "end" in a.event.type]
    assert case["expect"] in ("match", "no_match")
    assert len(started) == (1 if case["expect"] == "match" else 0), alerts
    assert len(ended) == (1 if case.get("resolves") else 0), alerts
    if ended:
        assert ended[0].alert.group_key == started[0].alert.group_key
    if started and "severity" in case:
        assert started[0].alert.severity == case["severity"]


@pytest.mark.parametrize(("rule_id", "config", "case"), cases("correlation"))
def test_correlation_case(rule_id: str, config: dict[str, Any], case: dict[str, Any]) -> None:
    enricher = EnrichConfig().build()
    detector = SigmaDetectorConfig(**config).build()
    engine = CorrelationEngine(detector.correlations.rules, detector_late(config),
                               clock=lambda: 0.0)
    alerts: list[Alert] = []
    for item in case["records"]:
        for event in parse(item["source"], item["record"], case["name"]):
            for candidate in detector.detect(enricher.enrich(event))[1]:
                alerts.extend(engine.observe(candidate))
    alerts.extend(engine.close_all())
    check(case, [a for a in alerts if a.rule.id == rule_id])


def detector_late(config: dict[str, Any]) -> float:
    return float(config.get("late_events_secs", 60))


def parse(source: str, record: Any, origin: str) -> Iterable[Any]:
    data = orjson.dumps(record)
    if PARSERS[source] is K8sAuditParser:
        return parse_line(data, origin)
    return PARSERS[source]().parse(RawRecord(data, origin, NOW))


class Circuits:
    """The notify stage's `notify_circuit_open` samples, as a case's steps set them."""

    def __init__(self) -> None:
        self.open: dict[str, bool] = {}

    def __call__(self) -> list[Sample]:
        return [Sample("notify_circuit_open", "gauge", "", 1.0 if is_open else 0.0,
                       {"receiver": name}) for name, is_open in self.open.items()]


@pytest.mark.parametrize(("rule_id", "config", "case"), cases("watch"))
def test_watch_case(rule_id: str, config: dict[str, Any], case: dict[str, Any],
                    tmp_path: Path) -> None:
    now = [T0]
    telemetry, problems, circuits = Telemetry(), Problems(), Circuits()
    telemetry.add_source(circuits)
    watch = SelfWatch(WatchConfig(**config), telemetry, Checkpoint(tmp_path / "w.json"),
                      publish=lambda alerts: None, problems=problems, clock=lambda: now[0])
    at = lambda secs: datetime.fromtimestamp(T0 + secs, timezone.utc)   # noqa: E731
    alerts: list[Alert] = []
    for step in case["steps"]:
        now[0] = T0 + step["at"]
        if "heard" in step:
            event_at = step.get("event_at")
            watch.heard(step["heard"], at(step["at"]),
                        at(event_at) if event_at is not None else None)
        for source in {*step.get("parsed", {}), *step.get("dead_lettered", {})}:
            telemetry.record(f"collect.{source}", sent=step.get("parsed", {}).get(source, 0),
                             dead_lettered=step.get("dead_lettered", {}).get(source, 0))
        for receiver, state in step.get("circuit", {}).items():
            circuits.open[receiver] = state == "open"
        if "problem" in step:
            problems.report(**step["problem"], at=now[0])
        alerts.extend(watch.check())
        watch.pending = []                                 # published
    check(case, [a for a in alerts if a.rule.id == rule_id])


def test_every_pipeline_rule_and_ct_cor_009_has_a_positive_and_a_negative_case() -> None:
    covered: dict[str, set[str]] = {}
    for _path, spec in SPECS:
        if spec.get("type") in ("watch", "correlation"):
            covered.setdefault(spec["rule"], set()).update(c["expect"] for c in spec["cases"])
    assert covered == {rule: {"match", "no_match"} for rule in (*OPS_RULES, "CT-COR-009")}
