"""The behaviour cases of the first-seen and spike rules (detectors/rules/tests/*.yml with
`type: history`), through the real audit parser, the rule pack's detector and a history engine,
as the detect and correlate stages run them: each case's `history` first, then its `event`."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import yaml

from detector_support import parse_line
from detectors import PACKAGED_RULES
from history_support import HistoryPipeline

CASE_FILES = [path for path in sorted((PACKAGED_RULES / "tests").glob("*.yml"))
              if yaml.safe_load(path.read_text()).get("type") == "history"]


def cases() -> list[Any]:
    return [pytest.param(spec["rule"], case, id=f"{path.stem}: {case['name']}")
            for path in CASE_FILES for spec in [yaml.safe_load(path.read_text())]
            for case in spec["cases"]]


def records(item: dict[str, Any]) -> list[dict[str, Any]]:
    """An audit Event, or {copies, every_secs, event}: that many copies, each with its own
    auditID, `every_secs` apart."""
    if "copies" not in item:
        return [item]
    out = []
    for i in range(item["copies"]):
        record = copy.deepcopy(item["event"])
        shift = timedelta(seconds=i * item["every_secs"])
        for key in ("requestReceivedTimestamp", "stageTimestamp"):
            moment = datetime.fromisoformat(record[key]) + shift
            record[key] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record["auditID"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{record['auditID']}/{i}"))
        out.append(record)
    return out


@pytest.mark.parametrize(("rule_id", "case"), cases())
def test_history_behaviour_case(rule_id: str, case: dict[str, Any]) -> None:
    pipeline = HistoryPipeline(**case.get("config", {}))
    events = [event for item in case["history"] for record in records(item)
              for event in parse_line(orjson.dumps(record), case["name"])]
    assert pipeline.feed(events, rule_id) == []          # history only teaches, here
    decided = [event for record in records(case["event"])
               for event in parse_line(orjson.dumps(record), case["name"])]
    alerts = pipeline.feed(decided, rule_id)
    assert case["expect"] in ("match", "no_match")
    assert len(alerts) == (1 if case["expect"] == "match" else 0)
    if alerts and "severity" in case:
        assert alerts[0].alert.severity == case["severity"]


def test_every_first_seen_and_spike_rule_has_a_positive_and_a_negative_case() -> None:
    covered: dict[str, set[str]] = {}
    for path in CASE_FILES:
        spec = yaml.safe_load(path.read_text())
        covered.setdefault(spec["rule"], set()).update(c["expect"] for c in spec["cases"])
    pack = {rule.id for rule in HistoryPipeline().detector.history.rules.rules}
    assert pack == {"CT-NEW-001", "CT-NEW-002", "CT-NEW-003", "CT-SPK-001"}
    assert {rule: covered.get(rule) for rule in pack} == \
        {rule: {"match", "no_match"} for rule in pack}
