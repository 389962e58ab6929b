"""Every behaviour case in detectors/rules/tests/*.yml, through the real parser and detector.

A case file names its rule and lists cases: a raw audit Event, whether the rule must raise an
alert for it (`expect: match | no_match`), the alert's severity, and optional detector config
(production_namespaces, exceptions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from detector_support import parse_line
from detectors import PACKAGED_RULES, SigmaDetectorConfig, load_rules

CASE_FILES = sorted((PACKAGED_RULES / "tests").glob("*.yml"))


def cases() -> list[Any]:
    params = []
    for path in CASE_FILES:
        spec = yaml.safe_load(path.read_text())
        for case in spec["cases"]:
            params.append(pytest.param(spec["rule"], case, id=f"{path.stem}: {case['name']}"))
    return params


@pytest.mark.parametrize(("rule_id", "case"), cases())
def test_behaviour_case(rule_id: str, case: dict[str, Any]) -> None:
    detector = SigmaDetectorConfig(**case.get("config", {})).build()
    (event,) = parse_line(orjson.dumps(case["event"]), origin=case["name"])
    alerts = [alert for alert in detector.observe(event) if alert.rule.id == rule_id]
    assert case["expect"] in ("match", "no_match")
    assert len(alerts) == (1 if case["expect"] == "match" else 0)
    if alerts and "severity" in case:
        assert alerts[0].alert.severity == case["severity"]


def test_every_rule_in_the_pack_has_a_positive_and_a_negative_case() -> None:
    covered: dict[str, set[str]] = {}
    for path in CASE_FILES:
        spec = yaml.safe_load(path.read_text())
        covered.setdefault(spec["rule"], set()).update(c["expect"] for c in spec["cases"])
    pack = {rule.id for rule in load_rules([PACKAGED_RULES]).rules}
    assert pack and {rule: covered.get(rule) for rule in pack} == \
        {rule: {"match", "no_match"} for rule in pack}
