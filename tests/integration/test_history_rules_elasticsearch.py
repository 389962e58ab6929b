"""First-seen rules with the real Elasticsearch as the store: exec events streamed through the
pipeline's process, correlate and store stages raise CT-NEW-001 in the correlate stage, `ctrail
hunt`'s replay over the stored copy gives the same alerts, and a rule added later is backfilled
from Elasticsearch when the correlate stage starts, so it is quiet on what is stored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from ctrail.bus.codec import encode
from ctrail.settings import Settings
from detectors.history_replay import hunt_history
from detectors.sigma_rules import PACKAGED_RULES
from tests.contract.test_store import (
    elasticsearch_config,
    es_namespace,  # noqa: F401  (the session's namespace)
)
from tests.e2e.test_hunt_history import BOB, CAROL, LATER, LEARNING
from tests.hunt_replay import stream, streamed_alerts, summary
from tests.services import empty_elasticsearch_namespace

pytestmark = pytest.mark.integration
NEW = [f"CT-NEW-001|{CAROL}|shop", f"CT-NEW-001|{BOB}|kube-system"]


def stream_audit(config: Settings, records: list[dict[str, Any]]) -> None:
    stream(config, (("k8s-audit", record) for record in records))


def stored_alerts(config: Settings) -> list[dict[str, Any]]:
    return streamed_alerts(config, "rule.id:CT-NEW-001")


def test_streamed_and_hunted_first_seen_alerts_agree_on_elasticsearch(
        tmp_path: Path, es_namespace: str) -> None:  # noqa: F811
    config = Settings(data_dir=tmp_path,  # type: ignore[arg-type]
                      store=elasticsearch_config(namespace=es_namespace))
    try:
        stream_audit(config, LEARNING + LATER)
        streamed = stored_alerts(config)
        assert sorted(doc["alert"]["group_key"] for doc in streamed) == sorted(NEW)
        detector = config.detection.build()
        (rule,) = [r for r in detector.history.rules.rules if r.id == "CT-NEW-001"]
        store = config.store.build(config.data_dir)
        try:
            hunted = hunt_history(store, detector, rule)
        finally:
            store.close()
        assert sorted(summary(orjson.loads(encode(a))) for a in hunted) == \
            sorted(summary(doc) for doc in streamed)
    finally:
        empty_elasticsearch_namespace(es_namespace)


def test_a_rule_added_later_is_backfilled_from_elasticsearch(
        tmp_path: Path, es_namespace: str) -> None:  # noqa: F811
    without = tmp_path / "rules"
    without.mkdir()
    shutil.copy(PACKAGED_RULES / "ct-k8s-004-exec-into-pod.yml", without)
    store = elasticsearch_config(namespace=es_namespace)
    before = Settings(data_dir=tmp_path, store=store,  # type: ignore[arg-type]
                      detection={"rule_paths": [without]})
    after = Settings(data_dir=tmp_path, store=store)  # type: ignore[arg-type]
    try:
        stream_audit(before, LEARNING)
        stream_audit(after, LATER)
        assert sorted(doc["alert"]["group_key"] for doc in stored_alerts(after)) == sorted(NEW)
    finally:
        empty_elasticsearch_namespace(es_namespace)
