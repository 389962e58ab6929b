"""Docker Engine events (GET /events, `docker events --format '{{json .}}'`, and the default text
format of `docker events`) to ECS Events.

Both JSON shapes are accepted: API >= 1.22 (Type/Action/Actor, time/timeNano) and the legacy
top-level status/id/from, which API 1.52 removed. Container labels that the kubelet sets through
dockershim or cri-dockerd (io.kubernetes.pod.*) become `kubernetes.*`, so a container event joins
its pod without asking the API server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Final

from collector.identity import event_id
from collector.parsers.common import (decode_text, from_epoch, load_object, optional_obj,
                                      optional_str, parse_time)
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event

DATASET: Final = "docker.events"
K8S_LABELS: Final = {"io.kubernetes.pod.name": ("pod", "name"),
                     "io.kubernetes.pod.uid": ("pod", "uid"),
                     "io.kubernetes.container.name": ("container", "name")}
EVENT_TYPES: Final = {"create": "creation", "start": "start", "restart": "start",
                      "die": "end", "kill": "end", "stop": "end", "oom": "end",
                      "destroy": "deletion", "remove": "deletion", "delete": "deletion",
                      "exec_create": "creation", "exec_start": "start", "exec_die": "end"}
CATEGORIES: Final = {"container": "process", "network": "network", "volume": "file",
                     "image": "package", "plugin": "package", "daemon": "host", "node": "host"}
# 2017-01-05T00:35:58.859401177+08:00 container kill 0fdb...ff37 (image=alpine, name=t, signal=15)
TEXT_LINE: Final = re.compile(r"(\S+) (\S+) (.+?) (\S+)(?: \((.*)\))?")
TEXT_ATTR: Final = re.compile(r", (?=[^,=]+=)")       # values may hold ", ", keys never hold "="


class DockerEventParser:
    """One Docker Engine event (JSON object or default-format text line) -> one Event."""

    dataset: ClassVar[str] = DATASET

    def parse(self, record: RawRecord) -> list[Event]:
        text = decode_text(record.data)
        if text.lstrip().startswith("{"):
            message = normalise(load_object(record.data, "docker event"))
        else:
            message = from_text(text)
        return [to_event(message, text, record)]


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Type, Action, Actor.ID, Actor.Attributes, scope and a timestamp, from either JSON shape."""
    actor = optional_obj(doc, "Actor")
    attributes = optional_obj(actor, "Attributes", "Actor.")
    if any(not isinstance(v, str) for v in attributes.values()):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "Actor.Attributes values must be strings")
    action = optional_str(doc, "Action") or optional_str(doc, "status")
    if action is None:
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "neither Action nor status")
    legacy_from = optional_str(doc, "from")
    if legacy_from and "image" not in attributes:
        attributes = {**attributes, "image": legacy_from}
    actor_id = optional_str(actor, "ID", "Actor.") or optional_str(doc, "id")
    kind = optional_str(doc, "Type") or ("container" if legacy_from else None)
    return {"type": kind, "action": action, "actor_id": actor_id, "attributes": attributes,
            "scope": optional_str(doc, "scope"), "timestamp": timestamp(doc)}


def timestamp(doc: dict[str, Any]) -> datetime:
    if doc.get("timeNano") is not None:
        return from_epoch(doc["timeNano"], "timeNano", 10**9)
    if doc.get("time") is not None:
        return from_epoch(doc["time"], "time")
    raise InvalidInput(Reason.INVALID_TIMESTAMP, "neither timeNano nor time")


def from_text(text: str) -> dict[str, Any]:
    match = TEXT_LINE.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "not a Docker event (JSON or default text)")
    when, kind, action, actor_id, attrs = match.groups()
    attributes = {}
    for pair in TEXT_ATTR.split(attrs) if attrs else ():
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(Reason.SCHEMA_MISMATCH, f"attribute without '=': {pair!r:.60}")
        attributes[name] = value
    return {"type": kind, "action": action, "actor_id": actor_id, "attributes": attributes,
            "scope": None, "timestamp": parse_time(when, "time")}


def to_event(msg: dict[str, Any], original: str, record: RawRecord) -> Event:
    kind, attributes = msg["type"], msg["attributes"]
    verb, _, argument = msg["action"].partition(": ")   # "exec_start: sh -c ls", "health_status: healthy"
    is_container = kind == "container"
    container_id = msg["actor_id"] if is_container else attributes.get("container")
    image = attributes.get("image") if is_container else None
    doc: dict[str, Any] = {
        "@timestamp": msg["timestamp"],
        "event": {
            "id": event_id(DATASET, record.data), "kind": "event",
            "category": (CATEGORIES.get(kind or "", "configuration"),),
            "type": (EVENT_TYPES.get(verb, "info"),),
            "action": verb, "dataset": DATASET, "module": "docker",
            "original": original, "ingested": record.received,
        },
        "container": {"id": container_id, "name": attributes.get("name") if is_container else None,
                      "runtime": "docker", "image": image_fields(image)}
        if container_id or image else None,
        "kubernetes": kubernetes(attributes),
        "process": process(verb, argument, attributes),
        "related": {"hash": hashes} if (hashes := image_hashes(image)) else None,
        "docker": {"type": kind, "scope": msg["scope"], "actor_id": msg["actor_id"],
                   "attributes": attributes or None},
    }
    return Event.model_validate(doc)


def image_fields(reference: str | None) -> dict[str, Any] | None:
    """"repo/name:tag@sha256:..." -> name, tag, hash.all. A colon before the last "/" is a port."""
    if not reference:
        return None
    if reference.startswith("sha256:"):                 # started by image id: no name
        return {"hash": {"all": (reference,)}}
    name, _, digest = reference.partition("@")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return {"name": name, "tag": (tag,) if tag else (),
            "hash": {"all": (digest,)} if digest else None}


def image_hashes(reference: str | None) -> tuple[str, ...]:
    digests = (image_fields(reference) or {}).get("hash")
    return digests["all"] if digests else ()


def kubernetes(attributes: dict[str, str]) -> dict[str, Any] | None:
    namespace = attributes.get("io.kubernetes.pod.namespace")
    groups: dict[str, dict[str, str]] = {}
    for label, (group, field) in K8S_LABELS.items():
        if label in attributes:
            groups.setdefault(group, {})[field] = attributes[label]
    if namespace is None and not groups:
        return None
    return {"namespace": namespace, **groups}


def process(verb: str, argument: str, attributes: dict[str, str]) -> dict[str, Any] | None:
    """An exec's command line, and the exit code a die or exec_die reports."""
    command = argument if verb.startswith("exec_") and argument else None
    code = attributes.get("exitCode")
    exit_code = int(code) if code is not None and re.fullmatch(r"-?\d{1,10}", code) else None
    if command is None and exit_code is None:
        return None
    return {"command_line": command, "exit_code": exit_code}
