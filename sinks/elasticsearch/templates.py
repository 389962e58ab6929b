"""Index templates, component templates and ILM policies: rendered from the JSON package data in
templates/ and installed at startup, idempotently (a PUT replaces what an older start put).

Everything is named per namespace, so two deployments sharing a cluster (prod, staging) may keep
their data for different times. Each data class has an index template matching its streams; the
events template matches every `logs-containertrail.*-<ns>` stream, the alerts and dead-letter
ones are more specific and win by priority. All beat Elastic's built-in `logs-*-*` (100).
"""

from __future__ import annotations

import copy
import json
import logging
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from sinks.elasticsearch.config import ElasticsearchConfig, RetentionConfig
from sinks.elasticsearch.documents import (
    ALERTS_DATASET,
    DEAD_LETTERS_DATASET,
    PREFIX,
    REPLAYS_DATASET,
    stream,
)

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

EVENTS_PRIORITY: Final = 200
SPECIFIC_PRIORITY: Final = 210
# data class -> (policy file, component templates, retention field)
CLASSES: Final = {
    "events": ("ilm-events.json", ("ecs-mappings",), "events_days"),
    "alerts": ("ilm-alerts.json", ("ecs-mappings",), "alerts_days"),
    "dead-letters": ("ilm-dead-letters.json", ("dead-letter-mappings",), "dead_letters_days"),
}


@cache
def package_json(name: str) -> dict[str, Any]:
    text = resources.files("sinks.elasticsearch").joinpath("templates", name).read_text()
    return json.loads(text)


def name(kind: str, namespace: str) -> str:
    return f"containertrail-{kind}-{namespace}"


def patterns(data_class: str, namespace: str) -> list[str]:
    if data_class == "alerts":
        return [stream(ALERTS_DATASET, namespace)]
    if data_class == "dead-letters":
        # Replay verdicts are kept as long as the dead letters they judge, with their mappings.
        return [stream(DEAD_LETTERS_DATASET, namespace), stream(REPLAYS_DATASET, namespace)]
    return [f"{PREFIX}.*-{namespace}"]


def policy(data_class: str, retention: RetentionConfig) -> dict[str, Any]:
    """The class's ILM policy with the configured ages."""
    file, _, days_field = CLASSES[data_class]
    body = copy.deepcopy(package_json(file))
    phases = body["policy"]["phases"]
    phases["hot"]["actions"]["rollover"]["max_age"] = f"{retention.rollover_days}d"
    phases["delete"]["min_age"] = f"{getattr(retention, days_field)}d"
    return body


def component_templates(namespace: str) -> dict[str, dict[str, Any]]:
    return {name(part, namespace): package_json(f"{part}.json")
            for part in ("ecs-mappings", "dead-letter-mappings")}


def index_templates(namespace: str, ilm: bool) -> dict[str, dict[str, Any]]:
    """One per data class; `index.lifecycle.name` only where the cluster has ILM."""
    found = {}
    for data_class, (_, parts, _) in CLASSES.items():
        settings = {"index.lifecycle.name": name(data_class, namespace)} if ilm else {}
        found[name(data_class, namespace)] = {
            "index_patterns": patterns(data_class, namespace),
            "data_stream": {},
            "priority": EVENTS_PRIORITY if data_class == "events" else SPECIFIC_PRIORITY,
            "composed_of": [name(part, namespace) for part in parts],
            "template": {"settings": settings},
            "_meta": {"managed_by": "containertrail", "data_class": data_class},
        }
    return found


def why_no_ilm(client: Elasticsearch) -> str | None:
    """None when the cluster has ILM; otherwise why not. Asks GET _xpack (features), which any
    cluster answers: a build without x-pack answers 400 rather than with a feature list."""
    from elasticsearch import ApiError

    try:
        features = client.xpack.info(categories="features").body.get("features", {})
    except ApiError as exc:
        return f"the cluster has no x-pack features ({exc.status_code} {exc.message})"
    ilm = features.get("ilm") or {}
    if not (ilm.get("available") and ilm.get("enabled")):
        return "ILM is not available or not enabled on the cluster"
    return None


def install(client: Elasticsearch, config: ElasticsearchConfig) -> bool:
    """Put policies (where ILM exists), component and index templates; True when ILM exists."""
    reason = why_no_ilm(client)
    if reason is None:
        for data_class in CLASSES:
            client.ilm.put_lifecycle(name=name(data_class, config.namespace),
                                     policy=policy(data_class, config.retention)["policy"])
    else:
        log.warning("Retention is not enforced: without index lifecycle management (ILM) "
                    "old data is never deleted.",
                    extra={"reason": reason, "hosts": config.hosts, "namespace": config.namespace})
    for template_name, body in component_templates(config.namespace).items():
        client.cluster.put_component_template(name=template_name, **body)
    for template_name, body in index_templates(config.namespace, reason is None).items():
        client.indices.put_index_template(name=template_name, **body)
    return reason is None


def missing(client: Elasticsearch, namespace: str) -> list[str]:
    """Index templates of this namespace that the cluster does not have."""
    return [template_name for template_name in index_templates(namespace, ilm=False)
            if not client.indices.exists_index_template(name=template_name)]
