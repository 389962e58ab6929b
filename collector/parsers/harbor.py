"""Harbor webhook payloads (the "Default" format and CloudEvents 1.0) to ECS Events.

Both formats carry the same data (`event_data` or `data`): the artifacts (`resources[]`) and their
repository. Each resource becomes one Event in the same `registry.*` group the Distribution
parser fills; a payload without resources (replication, tag retention) becomes one Event that
keeps its data under `registry.details`. `event.original` is the whole payload for each, because
the operator and the event type live outside the resources; ids differ by the resource's index.

When an artifact is pushed or pulled by digest, Harbor puts the digest in `tag`; such a tag is
left out of `registry.tag`, which holds real tags only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from collector.parsers.common import (
    RedactingParser,
    decode_text,
    from_epoch,
    load_object,
    optional_int,
    optional_obj,
    optional_str,
    parse_time,
)
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event
from ctrail.identity import event_id

DATASET: Final = "registry.harbor"
ACTIONS: Final = {
    "PUSH_ARTIFACT": "push", "harbor.artifact.pushed": "push",
    "PULL_ARTIFACT": "pull", "harbor.artifact.pulled": "pull",
    "DELETE_ARTIFACT": "delete", "harbor.artifact.deleted": "delete",
    "SCANNING_COMPLETED": "scan_completed", "harbor.scan.completed": "scan_completed",
    "SCANNING_FAILED": "scan_failed", "harbor.scan.failed": "scan_failed",
    "SCANNING_STOPPED": "scan_stopped", "harbor.scan.stopped": "scan_stopped",
    "QUOTA_EXCEED": "quota_exceeded", "harbor.quota.exceeded": "quota_exceeded",
    "QUOTA_WARNING": "quota_warning", "harbor.quota.warned": "quota_warning",
    "REPLICATION": "replication", "harbor.replication.status.changed": "replication",
    "TAG_RETENTION": "tag_retention", "harbor.tag_retention.finished": "tag_retention",
}
EVENT_TYPES: Final = {"push": "creation", "pull": "access", "delete": "deletion"}
DETAIL_KEYS: Final = ("replication", "retention", "custom_attributes")


class HarborParser(RedactingParser):
    """One Harbor webhook payload -> one Event per resource (at least one)."""

    dataset: ClassVar[str] = DATASET

    def parse(self, record: RawRecord) -> list[Event]:
        decode_text(record.data)        # refuses bytes that are not UTF-8, saying where
        payload = load_object(record.data, "Harbor payload")
        kind = optional_str(payload, "type")
        if kind is None:
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "a Harbor payload without a type")
        cloud = "specversion" in payload
        data = optional_obj(payload, "data" if cloud else "event_data")
        resources = data.get("resources") or [{}]
        if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "resources is not a list of objects")
        common = envelope(payload, kind, cloud, data, record)
        return [Event.model_validate(with_resource(common, resource, i, record))
                for i, resource in enumerate(resources)]


def envelope(payload: dict[str, Any], kind: str, cloud: bool, data: dict[str, Any],
             record: RawRecord) -> dict[str, Any]:
    """The fields every resource's Event shares."""
    action = ACTIONS.get(kind, kind.lower())
    operator = optional_str(payload, "operator")
    repository = optional_obj(data, "repository", "repository.")
    details = {k: data[k] for k in DETAIL_KEYS if data.get(k) is not None}
    scan = action.startswith("scan_")
    return {
        "@timestamp": timestamp(payload, cloud),
        "event": {
            "kind": "event", "category": ("vulnerability",) if scan else ("web",),
            "type": (EVENT_TYPES.get(action, "info"),), "action": action,
            "outcome": "failure" if action == "scan_failed" else "success",
            "dataset": DATASET, "module": "registry",
            "original": decode_text(record.data), "ingested": record.received,
        },
        "registry": {
            "type": "harbor",
            "event_id": optional_str(payload, "id") if cloud else None,
            "repository": optional_str(repository, "repo_full_name", "repository."),
            "namespace": optional_str(repository, "namespace", "repository."),
            "details": details or None,
        },
        "user": {"name": operator} if operator else None,
        "http": {"request": {"id": request_id}}
        if cloud and (request_id := optional_str(payload, "requestid")) else None,
        "message": message(details),
        "related": {"user": (operator,) if operator else ()},
    }


def with_resource(common: dict[str, Any], resource: dict[str, Any], index: int,
                  record: RawRecord) -> dict[str, Any]:
    digest = optional_str(resource, "digest", "resource.")
    tag = optional_str(resource, "tag", "resource.")
    url = optional_str(resource, "resource_url", "resource.")
    registry = {**common["registry"], "digest": digest, "url": url,
                "tag": None if tag is None or ":" in tag else tag,     # a tag never holds ":"
                "host": url.split("/", 1)[0] if url and "/" in url else None,
                "scan": scan_summary(optional_obj(resource, "scan_overview", "scan_overview."))}
    source = DATASET if index == 0 else f"{DATASET}\x00{index}"
    return {**common, "event": {**common["event"], "id": event_id(source, record.data)},
            "registry": registry,
            "related": {**common["related"], "hash": (digest,) if digest else ()}}


def scan_summary(overview: dict[str, Any]) -> dict[str, Any] | None:
    """The first report in scan_overview (keyed by report media type), summarised."""
    report = next((r for r in overview.values() if isinstance(r, dict)), None)
    if report is None:
        return None
    summary = optional_obj(report, "summary", "scan_overview.summary.")
    counts = optional_obj(summary, "summary", "scan_overview.summary.summary.")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in counts.values()):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "scan summary counts are not integers")
    scanner = optional_obj(report, "scanner", "scan_overview.scanner.")
    scanner_name = " ".join(filter(None, (optional_str(scanner, "name"),
                                          optional_str(scanner, "version"))))
    return {"status": optional_str(report, "scan_status"),
            "severity": optional_str(report, "severity"),
            "report_id": optional_str(report, "report_id"),
            "scanner": scanner_name or None,
            "total": optional_int(summary, "total"), "fixable": optional_int(summary, "fixable"),
            "counts": counts or None}


def timestamp(payload: dict[str, Any], cloud: bool) -> Any:
    if cloud:
        return parse_time(payload.get("time"), "time")
    return from_epoch(payload.get("occur_at"), "occur_at")


def message(details: dict[str, Any]) -> str | None:
    """Harbor's own sentence for quota events."""
    attributes = details.get("custom_attributes")
    text = attributes.get("Details") if isinstance(attributes, dict) else None
    return text if isinstance(text, str) else None
