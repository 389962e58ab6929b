"""`ctrail rules list | validate | test`, through the real entry point."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ctrail.cli.main import main
from detectors import PACKAGED_RULES


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_pack_rule_with_level_attack_and_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "list", "--format", "json")
    rules = {doc["id"]: doc for doc in map(orjson.loads, out.splitlines())}
    assert code == 0
    assert {f"CT-K8S-{n:03d}" for n in range(1, 24)} | {"CT-RT-001", "CT-RT-002", "CT-REG-001",
                                                        "CT-REG-002", "CT-REG-003"} <= set(rules)
    assert rules["CT-K8S-004"]["level"] == "medium"
    assert rules["CT-K8S-004"]["attack"] == ["T1609", "Execution"]
    assert rules["CT-K8S-004"]["file"].endswith("ct-k8s-004-exec-into-pod.yml")
    code, out, _ = run(capsys, "rules", "list")
    assert code == 0 and "CT-REG-002" in out


def test_validate_reports_each_broken_file_and_exits_1(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, sigmahq_rules: Path) -> None:
    code, out, _ = run(capsys, "rules", "validate", str(sigmahq_rules))
    assert (code, out.strip()) == (0, "16 rules loaded, 0 broken, 5 never match")
    (tmp_path / "bad.yml").write_text("title: t\nname: B-1\nlogsource: {product: kubernetes, "
                                      "service: audit}\ndetection:\n  sel: {verb|nope: get}\n"
                                      "  condition: sel\n")
    code, out, err = run(capsys, "rules", "validate", str(sigmahq_rules), str(tmp_path))
    assert code == 1 and out.strip() == "16 rules loaded, 1 broken, 5 never match"
    assert err.startswith(f"{tmp_path / 'bad.yml'}") and "nope" in err


def test_validate_warns_about_rules_that_can_never_match_an_audit_event(
        capsys: pytest.CaptureFixture[str], sigmahq_rules: Path) -> None:
    # Five of SigmaHQ's rules test fields raw audit events do not have, or a value the field
    # can never hold; pySigma loads them and they would never fire.
    code, _, err = run(capsys, "rules", "validate", str(sigmahq_rules))
    warned = {line.split(": rule ", 1)[0].removeprefix("ctrail: warning: ").rsplit("/", 1)[-1]:
              line for line in err.splitlines()}
    assert code == 0 and set(warned) == {
        "kubernetes_audit_hostpath_mount.yml", "kubernetes_audit_privileged_pod_creation.yml",
        "kubernetes_audit_rbac_permisions_listing.yml", "kubernetes_audit_sidecar_injection.yml",
        "kubernetes_audit_potential_enumeration_activity.yml"}
    assert "`hostPath`" in warned["kubernetes_audit_hostpath_mount.yml"]
    assert "`apiGroup`" in warned["kubernetes_audit_sidecar_injection.yml"]
    assert "'ALLOW'" in warned["kubernetes_audit_potential_enumeration_activity.yml"]
    code, out, err = run(capsys, "rules", "validate", str(PACKAGED_RULES))
    assert code == 0 and out.strip().endswith(", 0 broken, 0 never match") and err == ""


def test_list_and_test_include_correlation_rules(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "rules", "list", "--format", "json")
    rules = {doc["id"]: doc for doc in map(orjson.loads, out.splitlines())}
    assert {f"CT-COR-{n:03d}" for n in range(1, 9)} <= set(rules)
    assert (rules["CT-COR-003"]["type"], rules["CT-COR-003"]["level"]) == ("event_count",
                                                                           "medium")
    forbidden = [orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"00000000-0000-4000-8000-{n:012d}", "stage": "ResponseComplete",
        "verb": "list", "requestURI": "/api/v1/namespaces/kube-system/secrets",
        "user": {"username": "system:serviceaccount:shop:web"},
        "objectRef": {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
        "responseStatus": {"code": 403},
        "requestReceivedTimestamp": f"2026-11-20T09:00:{n:02d}.000000Z",
        "stageTimestamp": f"2026-11-20T09:00:{n:02d}.000000Z"}) for n in range(12)]
    log = tmp_path / "forbidden.log"
    log.write_bytes(b"\n".join(forbidden) + b"\n")
    code, out, err = run(capsys, "rules", "test", "CT-COR-003", str(log), "--format", "json")
    (alert,) = map(orjson.loads, out.splitlines())
    assert code == 0 and alert["rule"]["id"] == "CT-COR-003" and len(alert["alert"]["event_ids"]) >= 10
    assert err.strip() == "12 events, 1 matches, 0 records not parsed"


def test_test_runs_one_rule_over_a_file_of_events(
        capsys: pytest.CaptureFixture[str], falco_traces: Path, real_data: Path) -> None:
    code, out, err = run(capsys, "rules", "test", "CT-K8S-004",
                         str(falco_traces / "exec_pod.json"), "--format", "json")
    (alert,) = map(orjson.loads, out.splitlines())
    assert code == 0 and alert["rule"]["id"] == "CT-K8S-004"
    assert err.strip() == "1 events, 1 matches, 0 records not parsed"
    harbor = real_data / "harbor-webhooks" / "artifact_deleted.default.json"
    code, out, _ = run(capsys, "rules", "test", "CT-REG-003", str(harbor), "--source", "harbor",
                       "--format", "json")
    assert code == 0 and [orjson.loads(line)["rule"]["id"] for line in out.splitlines()] == \
        ["CT-REG-003"]


def test_test_takes_a_rule_file_and_refuses_an_unknown_id(
        capsys: pytest.CaptureFixture[str], falco_traces: Path, sigmahq_rules: Path) -> None:
    rule = sigmahq_rules / "kubernetes_audit_exec_into_container.yml"
    code, out, _ = run(capsys, "rules", "test", str(rule), str(falco_traces / "exec_pod.json"),
                       "--format", "json")
    assert code == 0 and len(out.splitlines()) == 1
    code, _, err = run(capsys, "rules", "test", "CT-NOPE-1", str(falco_traces / "exec_pod.json"))
    assert code == 2 and "neither a rule file nor a loaded rule id" in err
