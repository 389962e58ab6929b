"""`ctrail hunt` of correlation rules on the embedded store: the same alerts as streaming ingest
of the same records (tests/hunt_replay.py), through the real pipeline and through the CLI."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ctrail.bus.codec import encode
from ctrail.cli.main import main
from ctrail.errors import UsageError
from detectors import SigmaDetectorConfig
from detectors.hunt_correlation import hunt_detector
from detectors.sigma_rules import PACKAGED_RULES
from tests.hunt_replay import (
    EXPECTED,
    hunted_alerts,
    settings,
    stream,
    streamed_alerts,
    summary,
)


def test_hunt_gives_the_alerts_streaming_gave_on_the_embedded_store(tmp_path: Path) -> None:
    config = settings(tmp_path)
    stream(config)
    streamed = sorted(summary(doc) for doc in streamed_alerts(config))
    hunted = sorted(summary(orjson.loads(encode(alert))) for alert in hunted_alerts(config))
    assert {(rule, group) for _id, rule, group, *_ in streamed} == EXPECTED
    assert hunted == streamed


def test_the_cli_hunts_a_correlation_file_and_prints_its_alerts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "ctrail.yaml"
    config_file.write_text("detection:\n  production_namespaces: [payments]\n"
                           "  late_events_secs: 120\n")
    stream(settings(tmp_path / "data"))
    rule = PACKAGED_RULES / "ct-cor-009-deployed-without-scan.yml"
    args = ["--config", str(config_file), "--data-dir", str(tmp_path / "data")]
    assert main(["hunt", str(rule), "--format", "json", *args]) == 0
    (alert,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert alert["rule"]["id"] == "CT-COR-009" and alert["alert"]["count"] == 2
    # Before the deployments, nothing.
    assert main(["hunt", str(rule), "--to", "2026-11-20T09:29:00Z", "--format", "json",
                 *args]) == 0
    assert capsys.readouterr().out == ""


def test_a_rule_of_ones_own_may_use_the_packs_base_rules(tmp_path: Path) -> None:
    own = tmp_path / "burst.yml"
    own.write_text("title: Two refusals\nname: MY-BURST\ncorrelation:\n  type: event_count\n"
                   "  rules: [CT-COR-BASE-FORBIDDEN]\n  group-by: [user.name]\n"
                   "  timespan: 1m\n  condition: {gte: 2}\nlevel: low\n")
    detector = hunt_detector(own, SigmaDetectorConfig())
    assert [rule.id for rule in detector.correlations.rules] == ["MY-BURST"]
    with pytest.raises(UsageError, match="no correlation"):
        hunt_detector(PACKAGED_RULES / "ct-k8s-004-exec-into-pod.yml", SigmaDetectorConfig())
