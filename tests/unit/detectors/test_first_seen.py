"""First-seen (new_terms) rules on event time: learning, new and known terms, out-of-order and
late events, expiry, the LRU cap, and a restart in the middle of the learning window."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors import SigmaDetectorConfig
from detectors.window_state import Checkpoint, StageState
from history_support import DAY, HistoryPipeline, exec_at, request_at, secret_get_at

ALICE, BOB = "alice@example.com", "bob@example.com"


def learned(pipeline: HistoryPipeline) -> None:
    """Alice execs into shop on day 0 and day 10: day 14 ends the learning window."""
    assert pipeline.feed([exec_at(0), exec_at(10 * DAY)], "CT-NEW-001") == []


def test_the_pack_loads_the_four_history_rules() -> None:
    detector = SigmaDetectorConfig().build()
    rules = {rule.id: rule for rule in detector.history.rules.rules}
    assert sorted(rules) == ["CT-NEW-001", "CT-NEW-002", "CT-NEW-003", "CT-SPK-001"]
    assert rules["CT-NEW-001"].history_secs == 14 * 86_400
    assert rules["CT-NEW-001"].fields == ("user.name", "kubernetes.namespace")
    assert detector.rules.errors == () and detector.history.rules.errors == ()
    # CT-K8S-004 keeps alerting on its own; the new base rules do not.
    assert "CT-K8S-004" not in detector.silent
    assert {"CT-NEW-BASE-HUMAN-REQUEST", "CT-SPK-BASE-DENIED"} <= detector.silent


def test_nothing_is_new_during_the_learning_window() -> None:
    pipeline = HistoryPipeline()
    assert pipeline.feed([exec_at(0), exec_at(DAY, user=BOB, namespace="payments"),
                          exec_at(13 * DAY, namespace="kube-system")], "CT-NEW-001") == []


def test_a_new_user_and_namespace_after_learning_alerts_once() -> None:
    pipeline = HistoryPipeline(production_namespaces=["payments"])
    learned(pipeline)
    (alert,) = pipeline.feed([exec_at(15 * DAY, namespace="payments"),
                              exec_at(15 * DAY + 1, namespace="payments")], "CT-NEW-001")
    assert alert.alert.group_key == "CT-NEW-001|alice@example.com|payments"
    assert alert.alert.severity == "high"              # severity_in_production
    assert alert.message == "first seen: user.name=alice@example.com, kubernetes.namespace=payments"
    assert pipeline.feed([exec_at(15 * DAY + 2)], "CT-NEW-001") == []     # shop is known


def test_the_two_stages_of_one_exec_and_a_redelivery_raise_one_alert() -> None:
    pipeline = HistoryPipeline()
    learned(pipeline)
    started = exec_at(15 * DAY, namespace="batch", auditID="6f1c2d4e-0000-4000-8000-000000000001")
    complete = exec_at(15 * DAY + 0.5, namespace="batch", stage="ResponseComplete",
                       auditID="6f1c2d4e-0000-4000-8000-000000000001")
    assert len(pipeline.feed([started, complete, started], "CT-NEW-001")) == 1


def test_out_of_order_copies_of_a_known_term_do_not_alert() -> None:
    pipeline = HistoryPipeline()
    learned(pipeline)
    (alert,) = pipeline.feed([exec_at(15 * DAY + 30, namespace="batch")], "CT-NEW-001")
    # An earlier exec of the same term arrives late (after a newer one): known, no alert.
    assert pipeline.feed([exec_at(15 * DAY + 5, namespace="batch")], "CT-NEW-001") == []
    state = pipeline.engine.states["CT-NEW-001"]
    assert state.terms['["alice@example.com","batch"]'][0] == \
        exec_at(15 * DAY + 5).timestamp.timestamp()         # first seen moved back
    assert alert.timestamp == exec_at(15 * DAY + 30).timestamp


def test_a_late_event_of_a_new_term_still_alerts_after_learning_but_not_within_it() -> None:
    pipeline = HistoryPipeline(late_events_secs=60)
    learned(pipeline)
    assert pipeline.feed([exec_at(20 * DAY)], "CT-NEW-001") == []
    # Hours late: a term that truly never occurred is news however late it arrives...
    (late,) = pipeline.feed([exec_at(19 * DAY, user=BOB)], "CT-NEW-001")
    assert late.timestamp == exec_at(19 * DAY).timestamp
    # ...but an event from inside the learning window only teaches.
    assert pipeline.feed([exec_at(5 * DAY, user="carol@example.com")], "CT-NEW-001") == []


def test_a_term_unseen_for_a_whole_history_window_is_new_again_and_expires() -> None:
    pipeline = HistoryPipeline()
    learned(pipeline)
    assert pipeline.feed([exec_at(20 * DAY, user=BOB)], "CT-NEW-001")
    assert pipeline.feed([exec_at(36 * DAY, user=BOB)], "CT-NEW-001")   # 16 days later
    pipeline.wall[0] = 0.0
    pipeline.advance()                                   # the watermark is day 36 - 60 s
    terms = pipeline.engine.states["CT-NEW-001"].terms  # alice/shop: last seen on day 10
    assert list(terms) == ['["bob@example.com","shop"]']


def test_the_least_recently_seen_terms_are_forgotten_beyond_the_cap_and_counted() -> None:
    pipeline = HistoryPipeline(history_rules={"max_groups_per_rule": 3})
    pipeline.feed([exec_at(i, namespace=f"ns-{i}") for i in range(5)], "CT-NEW-001")
    state = pipeline.engine.states["CT-NEW-001"]
    assert list(state.terms) == [f'["alice@example.com","ns-{i}"]' for i in (2, 3, 4)]
    assert state.evicted == 2


def test_state_restored_after_a_restart_in_the_learning_window(tmp_path: Path) -> None:
    first = HistoryPipeline()
    state = StageState(Checkpoint(tmp_path / "correlate.json"), {"history": first.engine})
    first.feed([exec_at(0), exec_at(3 * DAY, user=BOB)], "CT-NEW-001")
    state.finish([])
    second = HistoryPipeline()                           # a restart on day 9
    StageState(Checkpoint(tmp_path / "correlate.json"), {"history": second.engine})
    assert second.engine.unlearned == set()
    assert second.feed([exec_at(9 * DAY, namespace="batch")], "CT-NEW-001") == []  # learning
    assert second.feed([exec_at(15 * DAY, user=BOB)], "CT-NEW-001") == []          # known
    (alert,) = second.feed([exec_at(15 * DAY, user="carol@example.com")], "CT-NEW-001")
    assert alert.user is not None and alert.user.name == "carol@example.com"


def test_a_redefined_rule_forgets_its_state(tmp_path: Path) -> None:
    first = HistoryPipeline()
    state = StageState(Checkpoint(tmp_path / "correlate.json"), {"history": first.engine})
    first.feed([exec_at(0)], "CT-NEW-001")
    state.finish([])
    saved = Checkpoint(tmp_path / "correlate.json").load()
    saved["history"]["rules"]["CT-NEW-001"]["signature"] = '["new_terms",["X"],["user.name"]]'
    Checkpoint(tmp_path / "correlate.json").save(saved)
    second = HistoryPipeline()
    StageState(Checkpoint(tmp_path / "correlate.json"), {"history": second.engine})
    assert "CT-NEW-001" in second.engine.unlearned
    assert second.engine.states["CT-NEW-001"].terms == {}


def test_a_human_user_from_a_new_source_ip_after_learning() -> None:
    pipeline = HistoryPipeline()
    pipeline.feed([request_at(0), request_at(10 * DAY)], "CT-NEW-003")
    assert pipeline.feed([request_at(15 * DAY)], "CT-NEW-003") == []
    (alert,) = pipeline.feed([request_at(15 * DAY, ip="198.51.100.99")], "CT-NEW-003")
    assert alert.alert.severity == "low"
    assert alert.alert.group_key == "CT-NEW-003|alice@example.com|198.51.100.99"
    # Service accounts and nodes are not human users.
    assert pipeline.feed([request_at(16 * DAY, user="system:serviceaccount:a:b", ip="1.2.3.4"),
                          request_at(16 * DAY, user="system:node:n1", ip="1.2.3.5")],
                         "CT-NEW-003") == []


def test_a_service_account_reading_secrets_of_another_namespace_for_the_first_time() -> None:
    pipeline = HistoryPipeline()
    injector = "system:serviceaccount:cert-manager:cainjector"
    pipeline.feed([secret_get_at(0, injector, "web"), secret_get_at(10 * DAY, injector, "shop")],
                  "CT-NEW-002")
    assert pipeline.feed([secret_get_at(15 * DAY, injector, "shop"),
                          secret_get_at(15 * DAY, injector, "cert-manager")],  # its own
                         "CT-NEW-002") == []
    (alert,) = pipeline.feed([secret_get_at(15 * DAY, injector, "payments")], "CT-NEW-002")
    assert alert.alert.severity == "high"
    assert alert.alert.group_key == f"CT-NEW-002|{injector}|payments"


def test_a_candidate_resent_within_minutes_is_thinned_in_the_detect_stage() -> None:
    pipeline = HistoryPipeline()
    sent = pipeline.candidates([request_at(m) for m in (0, 1, 2, 3)] + [request_at(10)])
    assert [c.timestamp for c in sent] == [request_at(0).timestamp, request_at(10).timestamp]


@pytest.mark.parametrize("change, message", [
    ("    fields: []\n", "new_terms needs `fields`"),
    ("    fields: [user.name]\n    history_window: fortnight\n", "is not a timespan"),
])
def test_a_broken_first_seen_rule_is_reported_and_the_others_load(
        tmp_path: Path, change: str, message: str) -> None:
    (tmp_path / "bad.yml").write_text(
        "title: Bad\nname: TEST-NEW\ncorrelation:\n    type: new_terms\n"
        "    rules: [CT-K8S-004]\n" + change + "level: low\n")
    from detectors import PACKAGED_RULES
    detector = SigmaDetectorConfig(rule_paths=(PACKAGED_RULES, tmp_path)).build()
    (error,) = detector.history.rules.errors
    assert message in error.reason and error.path == tmp_path / "bad.yml"
    assert len(detector.history.rules.rules) == 4 and detector.rules.errors == ()
