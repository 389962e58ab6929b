"""The first-seen and spike rules on the benign Helm audit corpus (16 563 complete rows of a real
kubeadm cluster's audit log, 2023-01-27 18:28-18:32 UTC, Helm installing and removing charts:
../shared/data/real/k8s-audit-benign-helm-dataset), each row rebuilt into its audit Event
(bench/corpus.py) at its own recorded time, in the file's order (a few rows are out of order).

Four minutes hold no 14-day window, so with the pack's windows every rule is still learning at
the end and raises nothing. Scaled to the corpus (learning windows of 2 minutes, CT-SPK-001 at
20 s against a 2-minute baseline) the rules learn the first half and raise three alerts in the
second, all CT-NEW-002 and all explained by the capture itself: three controllers that Helm had
just installed (kube-state-metrics of the prometheus chart at 18:30:55, cert-manager's
cainjector at 18:31:05 and cert-manager itself at 18:31:13) start their informers with a list
and watch of Secrets in all namespaces, which no service account had done before. Each raises
one alert, and nothing again. The refusals (71, most in the first minute, from kubelets, the
scheduler and the ReplicaSet controller while the cluster settles) never reach 20 per
principal in a window, so CT-SPK-001 stays quiet; CT-NEW-003 sees one human (kubernetes-admin)
from one address, learned at once; nobody execs (CT-NEW-001)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from ctrail.event import Alert, Event
from detector_support import parse_line
from detectors import PACKAGED_RULES
from history_support import HistoryPipeline

REPO = Path(__file__).resolve().parents[3]
HISTORY_RULES = ("CT-NEW-001", "CT-NEW-002", "CT-NEW-003", "CT-SPK-001")
TWO_MINUTES = 2 / 1440                              # in days


@pytest.fixture(scope="module")
def helm_events() -> list[Event]:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import corpus
    finally:
        sys.path.remove(str(REPO / "bench"))
    if not corpus.HELM_CSV.is_file():
        pytest.skip(f"{corpus.HELM_CSV} not found (CTRAIL_SHARED_DATA)")
    events = []
    for i, row in enumerate(corpus.helm_rows()):
        doc = corpus.benign_template(row)
        doc["auditID"] = row[corpus.AUDIT_ID]
        doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = row[corpus.RECEIVED]
        events.extend(parse_line(orjson.dumps(doc), f"audit-logs.csv:{i + 1}"))
    return events


def history_alerts(events: list[Event], **config: Any) -> list[Alert]:
    pipeline = HistoryPipeline(**config)
    return [alert for alert in pipeline.feed(events) if alert.rule.id in HISTORY_RULES]


def test_the_pack_windows_are_still_learning_after_four_minutes(helm_events: list[Event]) -> None:
    assert len(helm_events) == 16_563
    assert history_alerts(helm_events) == []


def test_scaled_to_the_corpus_the_rules_raise_three_explained_alerts(
        helm_events: list[Event], tmp_path: Path) -> None:
    spike = (PACKAGED_RULES / "ct-spk-001-denied-requests-spike.yml").read_text()
    scaled = spike.replace("timespan: 10m", "timespan: 20s").replace(
        "baseline_window: 6h", "baseline_window: 2m")
    assert scaled != spike
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in PACKAGED_RULES.glob("*.yml"):
        (rules / path.name).write_text(scaled if path.name.startswith("ct-spk-001") else
                                       path.read_text())
    alerts = history_alerts(helm_events, rule_paths=[rules], history_rules={
        "history_window_days": {rule: TWO_MINUTES for rule in HISTORY_RULES[:3]}})
    assert [(a.timestamp.isoformat(), a.alert.group_key) for a in alerts] == [
        ("2023-01-27T18:30:55.343984+00:00",
         "CT-NEW-002|system:serviceaccount:prometheus:my-prometheus-kube-state-metrics|*"),
        ("2023-01-27T18:31:05.415426+00:00",
         "CT-NEW-002|system:serviceaccount:cert-manager:my-cert-manager-cainjector|*"),
        ("2023-01-27T18:31:13.630278+00:00",
         "CT-NEW-002|system:serviceaccount:cert-manager:my-cert-manager|*")]
