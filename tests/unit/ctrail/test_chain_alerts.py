"""The chain stores the alerts it raises in the same write as their events, so an alert is
searchable as soon as its event is: the store stage (not running here) is not on its path."""

from __future__ import annotations

from pathlib import Path

import orjson

from collector.sources.files import FileSource
from ctrail.bus import ALERTS
from ctrail.components import EndOfInput
from ctrail.runtime.pipeline import Pipeline
from ctrail.settings import Settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "k8s-audit"


def test_an_alert_is_stored_with_its_event_by_the_chain_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    pipeline = Pipeline(settings, ["process"])
    try:
        collector = pipeline.collector("file", FileSource([str(SAMPLES / "exec_pod.json")],
                                                          settings.pipeline.max_record_bytes), "k8s-audit")
        try:
            while True:
                collector.run_once()
        except EndOfInput:
            pass
        pipeline.drain()
        store = pipeline.context.store()
        (event,) = store.search('event.action:create AND kubernetes.audit.objectRef.subresource:'
                                'exec', "events")
        (alert,) = store.search("rule.id:CT-K8S-004", "alerts")
        assert alert["alert"]["event_ids"] == [event["event"]["id"]]
        # Published as well, for notify, evidence, forward (and the store stage, which keeps
        # it once by id).
        published = [orjson.loads(value) for value in
                     settings.bus.read_topic(settings.data_dir, ALERTS, "test", 1.0)]
        assert alert["event"]["id"] in {doc["event"]["id"] for doc in published}
    finally:
        pipeline.close()
