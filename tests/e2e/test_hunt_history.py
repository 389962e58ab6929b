"""First-seen rules through the CLI on the embedded store: `ctrail ingest` raises CT-NEW-001 in
the correlate stage, `ctrail hunt` of the rule gives the same alerts, and a rule added to a
data directory that already holds history is backfilled from the store at start, so it is
quiet on what the store holds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from tests.hunt_replay import audit

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "detectors" / "rules"
FIRST_EXEC_RULE = RULES / "ct-new-001-first-exec-in-namespace.yml"
DAY = 1440.0
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def exec_into(day: float, user: str, namespace: str) -> dict[str, Any]:
    return audit(day * DAY, user, "create", f"/api/v1/namespaces/{namespace}/pods/web-0/exec",
                 {"resource": "pods", "namespace": namespace, "name": "web-0",
                  "subresource": "exec"}, 101)


def audit_log(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return str(path)


LEARNING = [exec_into(0, ALICE, "shop"), exec_into(10, ALICE, "shop"),
            exec_into(12, BOB, "payments")]
LATER = [exec_into(16, ALICE, "shop"), exec_into(16.1, CAROL, "shop"),
         exec_into(16.2, BOB, "payments"), exec_into(16.3, BOB, "kube-system")]


def groups(alerts: list[dict[str, Any]]) -> list[str]:
    return [alert["alert"]["group_key"] for alert in alerts]


def test_a_first_seen_rule_hunted_gives_the_alerts_ingest_raised(  # type: ignore[no-untyped-def]
        ctrail, tmp_path: Path) -> None:
    assert ctrail("ingest", "--source", "k8s-audit",
                  audit_log(tmp_path / "audit.log", LEARNING + LATER)).status == 0
    raised = ctrail("alerts", "--rule", "CT-NEW-001", "--format", "json").json_lines()
    assert groups(raised) == [f"CT-NEW-001|{CAROL}|shop", f"CT-NEW-001|{BOB}|kube-system"]
    hunted = ctrail("hunt", str(FIRST_EXEC_RULE), "--format", "json")
    assert hunted.status == 0, hunted.err
    assert hunted.json_lines() == raised


def test_a_rule_added_later_learns_from_the_store_and_is_quiet_on_it(  # type: ignore[no-untyped-def]
        ctrail, tmp_path: Path) -> None:
    without = tmp_path / "rules"
    without.mkdir()
    shutil.copy(RULES / "ct-k8s-004-exec-into-pod.yml", without)
    config = tmp_path / "before.yaml"
    config.write_text(f"detection:\n  rule_paths: [{without}]\n")
    assert ctrail("ingest", "--config", str(config), "--source", "k8s-audit",
                  audit_log(tmp_path / "first.log", LEARNING)).status == 0
    # CT-NEW-001 is added: the next start learns days 0-12 from the store.
    assert ctrail("ingest", "--source", "k8s-audit",
                  audit_log(tmp_path / "later.log", LATER)).status == 0
    raised = ctrail("alerts", "--rule", "CT-NEW-001", "--format", "json").json_lines()
    assert groups(raised) == [f"CT-NEW-001|{CAROL}|shop", f"CT-NEW-001|{BOB}|kube-system"]
