"""Falco alerts (json_output: true) to ECS Events.

The same JSON arrives from a file output, stdout, and the body Falco's http_output (and
Falcosidekick's webhook output) posts. The whole alert is kept under `falco.*`, as Elastic's Falco
integration keeps it; the output fields that name a container, a pod, a process or a user are
also copied to their ECS fields, so an alert joins the timeline of the container it fired in.

A Falco alert is `event.kind: alert` (ECS: raised by an external detector). Falco's own
"internal" events (metrics snapshots) are `event.kind: event`: they are not security alerts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import orjson

from collector.parsers.common import (
    RedactingParser,
    decode_text,
    from_epoch,
    load_object,
    optional_obj,
    optional_str,
    parse_time,
)
from collector.redact import PREFIX, TAG as REDACTED
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event, Severity
from ctrail.identity import event_id
from ctrail.runtime.deadletter import redacted_bytes

DATASET: Final = "falco.alerts"
SEVERITY: Final = {"emergency": Severity.CRITICAL, "alert": Severity.CRITICAL,
                   "critical": Severity.CRITICAL, "error": Severity.HIGH,
                   "warning": Severity.MEDIUM, "notice": Severity.LOW,
                   "informational": Severity.INFORMATIONAL, "info": Severity.INFORMATIONAL,
                   "debug": Severity.INFORMATIONAL}
ABSENT: Final = frozenset({None, "", "<NA>", "N/A"})    # Falco prints <NA> for unknown values
NOT_A_CONTAINER: Final = frozenset({"host", ""})          # container.id of host processes
# (ECS group, ECS field) <- Falco output field, first present wins
FIELDS: Final = (
    ("container", "id", "container.id"),
    ("container", "name", "container.name"),
    ("kubernetes", "namespace", "k8s.ns.name"),
    ("kubernetes", "namespace", "ka.target.namespace"),
    ("pod", "name", "k8s.pod.name"),
    ("pod", "uid", "k8s.pod.uid"),
    ("process", "name", "proc.name"),
    ("process", "pid", "proc.pid"),
    ("process", "executable", "proc.exepath"),
    ("process", "command_line", "proc.cmdline"),
    ("parent", "name", "proc.pname"),
    ("parent", "pid", "proc.ppid"),
    ("user", "name", "user.name"),
    ("user", "name", "ka.user.name"),
    ("user", "id", "user.uid"),
    ("image", "name", "container.image.repository"),
    ("image", "tag", "container.image.tag"),
)
INT_FIELDS: Final = frozenset({"pid"})


class FalcoParser(RedactingParser):
    """One Falco JSON alert -> one Event."""

    dataset: ClassVar[str] = DATASET

    def scrub(self, data: bytes) -> bytes:
        """The alert with every secret hashed, for intake to append (Falco alerts are few: each
        is looked at); the alert itself when it holds none or is not JSON."""
        try:
            alert = orjson.loads(data)
        except orjson.JSONDecodeError:                 # dead-lettered by the parse step
            return redacted_bytes(data, self.redactor.redact_text)
        redacted = self.redactor.falco(alert) if isinstance(alert, dict) else None
        return data if redacted is None else orjson.dumps(redacted)

    def parse(self, record: RawRecord) -> list[Event]:
        text = decode_text(record.data)
        alert = load_object(record.data, "Falco alert")
        rule = optional_str(alert, "rule")
        if rule is None or not isinstance(alert.get("output"), str):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "a Falco alert has a rule and an output")
        redacted = None if record.scrubbed else self.redactor.falco(alert)
        if redacted is not None:        # event.original re-serialised, as for audit events
            alert, text = redacted, orjson.dumps(redacted).decode()
        return [to_event(alert, rule, text, record, redacted is not None or PREFIX in text)]


def to_event(alert: dict[str, Any], rule: str, text: str, record: RawRecord,
             redacted: bool = False) -> Event:
    fields = optional_obj(alert, "output_fields")
    priority = optional_str(alert, "priority")
    severity = SEVERITY.get((priority or "").lower())
    internal = alert.get("source") == "internal"
    ecs = mapped(fields)
    target = fields.get("ka.target.name")
    if fields.get("ka.target.resource") == "pods" and isinstance(target, str) and target:
        ecs["pod"] = {"name": target, **ecs.get("pod", {})}
    if ecs.get("container", {}).get("id") in NOT_A_CONTAINER:
        ecs["container"].pop("id")
    if image := ecs.pop("image", None):
        tag = image.pop("tag", None)
        ecs.setdefault("container", {})["image"] = {**image, "tag": (tag,) if tag else ()}
    hostname = optional_str(alert, "hostname") or optional_str(fields, "evt.hostname")
    doc: dict[str, Any] = {
        "@timestamp": timestamp(alert, fields),
        "event": {
            "id": event_id(DATASET, record.data),
            "kind": "event" if internal else "alert",
            "category": () if internal else ("intrusion_detection",),
            "type": ("info",),
            "action": rule, "dataset": DATASET, "module": "falco",
            "original": text, "ingested": record.received,
            "severity": int(severity) if severity is not None else None,
        },
        "rule": {"name": rule, "ruleset": optional_str(alert, "source")},
        "message": alert["output"],
        "log": {"level": priority.lower()} if priority else None,
        "host": {"name": hostname} if hostname else None,
        "user": ecs.get("user"),
        "container": ecs.get("container") or None,
        "kubernetes": kubernetes(ecs),
        "process": process(ecs),
        "related": {"user": (ecs["user"]["name"],)} if ecs.get("user", {}).get("name") else None,
        "falco": alert,
        "tags": (REDACTED,) if redacted else (),
    }
    return Event.model_validate(doc)


def mapped(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{group: {field: value}} for the output fields Falco filled in (not <NA>)."""
    out: dict[str, dict[str, Any]] = {}
    for group, field, source in FIELDS:
        value = fields.get(source)
        if isinstance(value, (dict, list)):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, f"output_fields.{source} is not a value")
        if value in ABSENT or field in out.get(group, {}):
            continue
        if field in INT_FIELDS:
            if not isinstance(value, int) or isinstance(value, bool):
                continue                     # a pid Falco could not read; the raw keeps it
        else:
            value = str(value)
        out.setdefault(group, {})[field] = value
    return out


def timestamp(alert: dict[str, Any], fields: dict[str, Any]) -> Any:
    if alert.get("time") is not None:
        return parse_time(alert["time"], "time")
    if fields.get("evt.time") is not None:
        return from_epoch(fields["evt.time"], "output_fields.evt.time", 10**9)
    raise InvalidInput(Reason.INVALID_TIMESTAMP, "neither time nor output_fields.evt.time")


def kubernetes(ecs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    namespace = ecs.get("kubernetes", {}).get("namespace")
    if namespace is None and "pod" not in ecs:
        return None
    return {"namespace": namespace, "pod": ecs.get("pod")}


def process(ecs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if "process" not in ecs and "parent" not in ecs:
        return None
    return {**ecs.get("process", {}), "parent": ecs.get("parent")}
