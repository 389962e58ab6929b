"""`ctrail hunt` of correlation rules on the real Elasticsearch: the data set of
tests/hunt_replay.py streamed through the pipeline into Elasticsearch, then hunted over the
stored copy, gives the very alerts the stream raised (ids, groups, times, events, counts)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ctrail.bus.codec import encode
from tests.contract.test_store import (
    elasticsearch_config,
    es_namespace,  # noqa: F401  (the session's namespace)
)
from tests.hunt_replay import EXPECTED, hunted_alerts, settings, stream, streamed_alerts, summary
from tests.services import empty_elasticsearch_namespace

pytestmark = pytest.mark.integration


def test_hunt_gives_the_alerts_streaming_gave_on_elasticsearch(
        tmp_path: Path, es_namespace: str) -> None:  # noqa: F811
    config = settings(tmp_path, store=elasticsearch_config(namespace=es_namespace))
    try:
        stream(config)
        streamed = sorted(summary(doc) for doc in streamed_alerts(config))
        hunted = sorted(summary(orjson.loads(encode(alert))) for alert in hunted_alerts(config))
        assert {(rule, group) for _id, rule, group, *_ in streamed} == EXPECTED
        assert hunted == streamed
    finally:
        empty_elasticsearch_namespace(es_namespace)
