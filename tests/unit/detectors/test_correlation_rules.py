"""The catalog's correlation rules (CT-COR-002, 003, 004, 006), each with a positive and a
negative case, through the real audit parser, the rule pack and the correlation windows."""

from __future__ import annotations

from correlation_support import binding, exec_into, fired, forbidden, secret_read
from detectors import PACKAGED_RULES, SigmaDetectorConfig

SA = "system:serviceaccount:shop:deployer"


def test_the_pack_loads_its_correlations_without_errors() -> None:
    detector = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES,)).build()
    assert detector.correlations.errors == ()
    assert {"CT-COR-002", "CT-COR-003", "CT-COR-004", "CT-COR-006"} <= {
        rule.id for rule in detector.correlations.rules}
    # Base rules written only for correlations raise no alert of their own.
    assert {"CT-COR-BASE-FORBIDDEN", "CT-COR-BASE-BINDING"} <= detector.silent
    assert "CT-K8S-004" not in detector.silent


def test_cor_002_exec_then_secret_read_by_the_same_user_in_the_namespace() -> None:
    (alert,) = fired([exec_into(0, "web-0"), secret_read(7)], "CT-COR-002")
    assert alert.alert.severity == "high" and alert.alert.count == 2
    assert alert.alert.group_key == "CT-COR-002|alice@example.com|shop"
    assert alert.threat is not None and alert.threat.technique is not None
    assert alert.threat.technique.id == ("T1552.007",)


def test_cor_002_not_for_the_wrong_order_another_namespace_or_too_late() -> None:
    assert fired([secret_read(0), exec_into(1, "web-0")], "CT-COR-002") == []
    assert fired([exec_into(0, "web-0"), secret_read(1, namespace="billing")], "CT-COR-002") == []
    assert fired([exec_into(0, "web-0"), secret_read(11)], "CT-COR-002") == []
    assert fired([exec_into(0, "web-0"), secret_read(1, user="bob@example.com")],
                 "CT-COR-002") == []


def test_cor_003_ten_forbidden_responses_within_5_minutes() -> None:
    events = [forbidden(m * 0.4) for m in range(12)]
    (alert,) = fired(events, "CT-COR-003")
    assert alert.alert.count == 10 and len(alert.alert.event_ids) == 10
    assert alert.alert.severity == "medium"
    assert alert.event.id == fired(events, "CT-COR-003")[0].event.id    # deterministic


def test_cor_003_not_for_nine_or_when_spread_over_more_than_5_minutes() -> None:
    assert fired([forbidden(m * 0.4) for m in range(9)], "CT-COR-003") == []
    assert fired([forbidden(m * 0.6) for m in range(10)], "CT-COR-003") == []
    two_users = [forbidden(m * 0.2, user=f"u{m % 2}") for m in range(18)]
    assert fired(two_users, "CT-COR-003") == []


def test_cor_003_fires_once_per_window_not_per_event_after_the_threshold() -> None:
    assert len(fired([forbidden(m * 0.1) for m in range(19)], "CT-COR-003")) == 1
    assert len(fired([forbidden(m * 0.1) for m in range(20)], "CT-COR-003")) == 2


def test_cor_004_exec_into_five_distinct_pods_within_10_minutes() -> None:
    (alert,) = fired([exec_into(m, f"web-{m}") for m in range(5)], "CT-COR-004")
    assert alert.alert.count == 5 and alert.alert.severity == "high"


def test_cor_004_not_for_the_same_pod_again_or_pods_spread_out() -> None:
    assert fired([exec_into(m, "web-0") for m in range(8)], "CT-COR-004") == []
    assert fired([exec_into(m * 3, f"web-{m}") for m in range(5)], "CT-COR-004") == []


def test_cor_006_binding_then_secret_read_by_its_service_account_subject() -> None:
    subjects = [{"kind": "ServiceAccount", "name": "deployer", "namespace": "shop"}]
    (alert,) = fired([binding(0, subjects), secret_read(20, user=SA)], "CT-COR-006")
    assert alert.alert.group_key == f"CT-COR-006|{SA}"
    user_subject = [{"kind": "User", "name": "eve@example.com",
                     "apiGroup": "rbac.authorization.k8s.io"}]
    assert len(fired([binding(0, user_subject), secret_read(5, user="eve@example.com")],
                     "CT-COR-006")) == 1


def test_cor_006_not_for_another_reader_or_a_read_before_the_binding() -> None:
    subjects = [{"kind": "ServiceAccount", "name": "deployer", "namespace": "shop"}]
    assert fired([binding(0, subjects), secret_read(5, user="bob@example.com")],
                 "CT-COR-006") == []
    assert fired([secret_read(0, user=SA), binding(1, subjects)], "CT-COR-006") == []
    assert fired([binding(0, subjects), secret_read(31, user=SA)], "CT-COR-006") == []
