"""Every behaviour case in detectors/rules/tests/*.yml, through the real parser and detector.

A case file names its rule and lists cases: a raw record, whether the rule must raise an
alert for it (`expect: match | no_match`), the alert's severity, and optional detector config
(production_namespaces, exceptions, trusted_registries, ci_actors, system_namespaces).
`source` (file or case level) names the record's format as `ctrail ingest --source` does
(default k8s-audit); `before` lists records the same detector sees first (state: a tag pushed
earlier). Files with `type: history` (first-seen and spike rules) are test_history_rule_cases', with
`type: correlation` or `type: watch` (CT-COR-009, CT-OPS-*) test_timeline_rule_cases'. A record that yields several events (a registry envelope) must raise one alert in all."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
import yaml

from collector import PARSERS
from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import RawRecord
from ctrail.event import Event
from detector_support import NOW, parse_line
from detectors import PACKAGED_RULES, SigmaDetectorConfig, load_rules

CASE_FILES = sorted((PACKAGED_RULES / "tests").glob("*.yml"))


def cases() -> list[Any]:
    params = []
    for path in CASE_FILES:
        spec = yaml.safe_load(path.read_text())
        if spec.get("type", "event") != "event":    # history, correlation, watch: their own runners
            continue
        for case in spec["cases"]:
            case = {"source": spec.get("source", "k8s-audit"), **case}
            params.append(pytest.param(spec["rule"], case, id=f"{path.stem}: {case['name']}"))
    return params


@pytest.mark.parametrize(("rule_id", "case"), cases())
def test_behaviour_case(rule_id: str, case: dict[str, Any]) -> None:
    detector = SigmaDetectorConfig(**case.get("config", {})).build()
    for record in case.get("before", ()):
        for earlier in parse(case["source"], record, case["name"]):
            detector.observe(earlier)
    alerts = [alert for event in parse(case["source"], case["event"], case["name"])
              for alert in detector.observe(event) if alert.rule.id == rule_id]
    assert case["expect"] in ("match", "no_match")
    assert len(alerts) == (1 if case["expect"] == "match" else 0)
    if alerts and "severity" in case:
        assert alerts[0].alert.severity == case["severity"]


def parse(source: str, record: Any, origin: str) -> list[Event]:
    """Events from one raw record, through the real parser of `source`."""
    data = record.encode() if isinstance(record, str) else orjson.dumps(record)
    if PARSERS[source] is K8sAuditParser:
        return parse_line(data, origin)
    return PARSERS[source]().parse(RawRecord(data, origin, NOW))


def test_every_rule_in_the_pack_has_a_positive_and_a_negative_case() -> None:
    covered: dict[str, set[str]] = {}
    for path in CASE_FILES:
        spec = yaml.safe_load(path.read_text())
        if spec.get("type", "event") != "event":
            continue
        covered.setdefault(spec["rule"], set()).update(c["expect"] for c in spec["cases"])
    # Single-event catalog rules; correlation rules and their base rules have their own tests.
    pack = {rule.id for rule in load_rules([PACKAGED_RULES]).rules
            if re.fullmatch(r"CT-(K8S|RT|REG)-\d{3}", rule.id)}
    assert pack and {rule: covered.get(rule) for rule in pack} == \
        {rule: {"match", "no_match"} for rule in pack}
