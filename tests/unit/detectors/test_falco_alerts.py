"""Falco alerts keep their identity when CT-RT-001 raises them (issue 12), on real Falco JSON
alerts (../shared/data/real/falco-alerts-json): the alert is named after the Falco rule, says
Falco's output line, maps Falco's priority to its severity, carries Falco's tags (MITRE as
threat.*), and groups on the Falco rule and the container, not on one id for every Falco rule."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.parsers.falco import FalcoParser
from ctrail.components import RawRecord
from ctrail.event import Alert, Event
from detectors import SigmaDetectorConfig
from detectors.suppression import SuppressionConfig

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)
# The catalog's mapping (CT-RT-001): below Notice is informational, stored and not notified.
SEVERITY = {"Emergency": "critical", "Alert": "critical", "Critical": "critical",
            "Error": "high", "Warning": "medium", "Notice": "low",
            "Informational": "informational", "Debug": "informational"}


def real_alerts(real_data: Path) -> list[dict[str, Any]]:
    folder = real_data / "falco-alerts-json"
    return [orjson.loads(line) for name in ("falco_website_alerts.jsonl",
                                            "falco_test_single_rule_with_cat_write.jsonl")
            for line in (folder / name).read_bytes().splitlines() if line.strip()]


def security_alerts(real_data: Path) -> list[dict[str, Any]]:
    return [a for a in real_alerts(real_data) if a.get("source") != "internal"]


def raise_alert(detector: Any, falco: dict[str, Any]) -> tuple[Event, Alert]:
    (event,) = FalcoParser().parse(RawRecord(orjson.dumps(falco), "falco:1", NOW))
    (alert,) = [a for a in detector.observe(event) if a.rule.id == "CT-RT-001"]
    return event, alert


@pytest.fixture
def detector() -> Any:
    return SigmaDetectorConfig().build()


def test_the_alert_is_named_after_the_falco_rule_and_says_its_output(
        real_data: Path, detector: Any) -> None:
    alerts = security_alerts(real_data)
    assert len(alerts) == 22
    for falco in alerts:
        event, alert = raise_alert(detector, falco)
        assert alert.rule.id == "CT-RT-001"                 # the id stays the catalog's
        assert alert.rule.name == falco["rule"]
        assert alert.message == event.message == falco["output"]
        assert alert.alert.severity == SEVERITY[falco["priority"]]


def test_falco_tags_carry_over_and_mitre_ones_become_threat(
        real_data: Path, detector: Any) -> None:
    (shell,) = [a for a in security_alerts(real_data) if a.get("tags") and "mitre_execution"
                in a["tags"]]
    _, alert = raise_alert(detector, shell)
    assert set(shell["tags"]) <= set(alert.tags)
    assert alert.threat is not None and alert.threat.tactic is not None
    assert alert.threat.tactic.name == ("Execution",)
    # Falco's current rules also name techniques (T1059) and sub-techniques.
    tagged = {**shell, "tags": ["container", "shell", "mitre_execution", "T1059.004",
                                "maturity_stable", "mitre_privilege_escalation"]}
    _, alert = raise_alert(detector, tagged)
    assert alert.threat is not None and alert.threat.technique is not None
    assert alert.threat.technique.id == ("T1059.004",)
    assert alert.threat.tactic is not None
    assert alert.threat.tactic.name == ("Execution", "Privilege Escalation")
    # Without MITRE tags, no ATT&CK mapping is made up for the Falco rule.
    (untagged,) = [a for a in security_alerts(real_data)
                   if a["rule"] == "Contact K8S API Server From Container"][:1]
    _, alert = raise_alert(detector, untagged)
    assert alert.threat is None and alert.tags == ()


def test_grouping_keys_on_the_falco_rule_and_the_container(
        real_data: Path, detector: Any) -> None:
    keys: dict[tuple[str, str | None], set[str]] = {}
    for falco in security_alerts(real_data):
        _, alert = raise_alert(detector, falco)
        container = alert.container.id if alert.container is not None else None
        keys.setdefault((falco["rule"], container), set()).add(alert.alert.group_key)
    in_containers = {k: v for k, v in keys.items() if k[1] is not None}
    assert len(in_containers) == 8                   # 6 shells and 2 API contacts, 8 containers
    all_keys = [key for group in in_containers.values() for key in group]
    assert len(set(all_keys)) == len(all_keys) == 8  # one key per (Falco rule, container)
    # The eight open_from_cat alerts of Falco's test: one rule, on the host: one group.
    assert len(keys[("open_from_cat", None)]) == 1
    # Two rules in the same container are two groups.
    shell = next(a for a in security_alerts(real_data) if a["rule"] == "Terminal shell in container"
                 and a.get("output_fields", {}).get("container.id"))
    other = {**shell, "rule": "Drop and execute new binary in container",
             "output": shell["output"].replace("A shell was spawned", "A binary was run")}
    assert raise_alert(detector, shell)[1].alert.group_key != \
        raise_alert(detector, other)[1].alert.group_key


def test_suppression_folds_repeats_of_one_falco_rule_in_one_place_only(
        real_data: Path, detector: Any) -> None:
    suppressor = SuppressionConfig(window_secs=3600).build()
    published = [a for falco in security_alerts(real_data)
                 for a in suppressor.admit(raise_alert(detector, falco)[1])]
    names = sorted((a.rule.name, (a.container.id if a.container else None) or "")
                   for a in published)
    # Every (Falco rule, container) pair has its alert; the repeats folded are the same rule
    # in the same place (open_from_cat x8, the OVH Disallowed K8s User x3 ...).
    assert ("Contact K8S API Server From Container", "12fc4de5ccc3") in names
    assert ("Contact K8S API Server From Container", "281c99ea33c2") in names
    assert sum(1 for n in names if n[0] == "Terminal shell in container") == 6
    assert sum(1 for n in names if n[0] == "open_from_cat") == 1
