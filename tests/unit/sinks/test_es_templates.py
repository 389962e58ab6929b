"""Templates and ILM policies as shipped (package data) and as rendered from the config."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from pydantic import ValidationError

from sinks.elasticsearch import ElasticsearchConfig, RetentionConfig
from sinks.elasticsearch.templates import CLASSES, component_templates, index_templates, policy

POLICY_FILES = sorted(file for file, _, _ in CLASSES.values())


@pytest.mark.parametrize("file", POLICY_FILES)
def test_a_shipped_policy_rolls_over_when_hot_and_deletes_later(file: str) -> None:
    body = json.loads(resources.files("sinks.elasticsearch").joinpath("templates", file)
                      .read_text())
    phases = body["policy"]["phases"]
    assert set(phases) == {"hot", "delete"}
    assert set(phases["hot"]["actions"]["rollover"]) == {"max_age", "max_primary_shard_size"}
    assert phases["delete"]["actions"] == {"delete": {}}
    assert phases["delete"]["min_age"].endswith("d")


def test_the_policies_carry_the_configured_ages() -> None:
    retention = RetentionConfig(events_days=30, alerts_days=400, dead_letters_days=60,
                                rollover_days=1)
    ages = {cls: policy(cls, retention)["policy"]["phases"] for cls in CLASSES}
    assert {cls: p["delete"]["min_age"] for cls, p in ages.items()} == {
        "events": "30d", "alerts": "400d", "dead-letters": "60d"}
    assert {p["hot"]["actions"]["rollover"]["max_age"] for p in ages.values()} == {"1d"}
    assert policy("events", RetentionConfig())["policy"]["phases"]["delete"]["min_age"] == "90d"


def test_index_templates_name_data_streams_and_reference_ilm_only_when_it_exists() -> None:
    with_ilm, without = index_templates("prod", ilm=True), index_templates("prod", ilm=False)
    events = with_ilm["containertrail-events-prod"]
    assert events["index_patterns"] == ["logs-containertrail.*-prod"]
    assert events["data_stream"] == {} and events["priority"] > 100        # beats logs-*-*
    assert with_ilm["containertrail-alerts-prod"]["priority"] > events["priority"]
    assert with_ilm["containertrail-dead-letters-prod"]["index_patterns"] == [
        "logs-containertrail.dlq-prod", "logs-containertrail.dlq_replays-prod"]
    assert events["template"]["settings"] == {"index.lifecycle.name": "containertrail-events-prod"}
    assert all(t["template"]["settings"] == {} for t in without.values())
    parts = {p for t in with_ilm.values() for p in t["composed_of"]}
    assert parts == set(component_templates("prod"))


def test_open_ended_maps_are_flattened_and_the_original_is_stored_not_indexed() -> None:
    mappings = component_templates("prod")["containertrail-ecs-mappings-prod"]["template"]["mappings"]
    audit = mappings["properties"]["kubernetes"]["properties"]["audit"]["properties"]
    for field in ("annotations", "requestObject", "responseObject"):
        assert audit[field]["type"] == "flattened"
    assert mappings["properties"]["event"]["properties"]["original"]["index"] is False
    assert mappings["date_detection"] is False


def test_the_config_is_strict_and_takes_secrets_only_by_reference() -> None:
    ElasticsearchConfig(hosts=["https://es:9200"], username="ctrail", password={"env": "PW"})
    with pytest.raises(ValidationError):
        ElasticsearchConfig(hosts=["https://es:9200"], api_key="plain-text-key")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not both"):
        ElasticsearchConfig(hosts=["https://es:9200"], api_key={"env": "K"}, username="u",
                            password={"env": "P"})
    with pytest.raises(ValidationError, match="go together"):
        ElasticsearchConfig(hosts=["https://es:9200"], username="u")
    with pytest.raises(ValidationError):
        ElasticsearchConfig(hosts=["https://es:9200"], namespace="Prod-EU")
    with pytest.raises(ValidationError):
        ElasticsearchConfig(hosts=["https://es:9200"], shards=3)  # type: ignore[call-arg]
