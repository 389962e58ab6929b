"""Docker Engine events (GET /events, `docker events --format '{{json .}}'`, and the default text
format of `docker events`) to ECS Events.

A record may also wrap the event with what inspecting its container found, as the live
`docker_events` source writes it: `{"event": {...}, "inspect": {...}, "image": {...}}`. Then
`container.labels`, `container.security_context.privileged` (HostConfig.Privileged), image digests
(RepoDigests, ImageManifestDescriptor) and `docker.mounts`, `.user`, `.image_id` are filled in;
the id hashes the event alone, so a replay that inspected differently keeps its id.

Both JSON shapes are accepted: API >= 1.22 (Type/Action/Actor, time/timeNano) and the legacy
top-level status/id/from, which API 1.52 removed. Container labels that the kubelet sets through
dockershim or cri-dockerd (io.kubernetes.pod.*) become `kubernetes.*`, so a container event joins
its pod without asking the API server.
"""

from __future__ import annotations

import re
from datetime import datetime
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
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event
from ctrail.identity import event_id

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


class DockerEventParser(RedactingParser):
    """One Docker Engine event (JSON object or default-format text line) -> one Event."""

    dataset: ClassVar[str] = DATASET

    def parse(self, record: RawRecord) -> list[Event]:
        text = decode_text(record.data)
        if not text.lstrip().startswith("{"):
            return [to_event(from_text(text), text, record)]
        doc = load_object(record.data, "docker event")
        if not isinstance(doc.get("event"), dict):
            return [to_event(normalise(doc), text, record)]
        return [to_event(normalise(doc["event"]), text, record, orjson.dumps(doc["event"]),
                         wrapper=doc)]


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


def to_event(msg: dict[str, Any], original: str, record: RawRecord,
             identity: bytes | None = None, wrapper: dict[str, Any] | None = None) -> Event:
    kind, attributes = msg["type"], msg["attributes"]
    verb, _, argument = msg["action"].partition(": ")   # "exec_start: sh -c ls", "health_status: healthy"
    is_container = kind == "container"
    container_id = msg["actor_id"] if is_container else attributes.get("container")
    image = attributes.get("image") if is_container else None
    doc: dict[str, Any] = {
        "@timestamp": msg["timestamp"],
        "event": {
            "id": event_id(DATASET, identity or record.data), "kind": "event",
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
    if wrapper is not None:
        add_inspect(doc, optional_obj(wrapper, "inspect"), optional_obj(wrapper, "image"))
    return Event.model_validate(doc)


def add_inspect(doc: dict[str, Any], inspect: dict[str, Any], image: dict[str, Any]) -> None:
    """What inspecting the container found, onto the event's fields (a dict, before validation)."""
    config = optional_obj(inspect, "Config", "inspect.")
    host = optional_obj(inspect, "HostConfig", "inspect.")
    labels = optional_obj(config, "Labels", "inspect.Config.")
    if any(not isinstance(v, str) for v in labels.values()):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "inspect.Config.Labels values must be strings")
    privileged = host.get("Privileged")
    if privileged is not None and not isinstance(privileged, bool):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "inspect.HostConfig.Privileged is not a boolean")
    container = doc["container"] or {"runtime": "docker"}
    if container.get("image") is None:
        container["image"] = image_fields(optional_str(config, "Image", "inspect.Config."))
    digests = inspect_digests(inspect, image)
    if digests:
        image_doc = container.get("image") or {}
        known = (image_doc.get("hash") or {}).get("all", ())
        image_doc["hash"] = {"all": tuple(dict.fromkeys((*known, *digests)))}
        container["image"] = image_doc
        related = doc["related"] or {}
        related["hash"] = tuple(dict.fromkeys((*related.get("hash", ()), *digests)))
        doc["related"] = related
    name = optional_str(inspect, "Name", "inspect.")
    container.update({"labels": labels or None,
                      "security_context": {"privileged": privileged}
                      if privileged is not None else None})
    if not container.get("name") and name:
        container["name"] = name.lstrip("/")
    doc["container"] = container
    if doc["kubernetes"] is None and labels:
        doc["kubernetes"] = kubernetes(labels)
    mounts = inspect.get("Mounts") or []
    if not isinstance(mounts, list) or any(not isinstance(m, dict) for m in mounts):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "inspect.Mounts is not a list of objects")
    doc["docker"].update({
        "image_id": optional_str(inspect, "Image", "inspect."),
        "user": optional_str(config, "User", "inspect.Config."),
        "mounts": tuple({"type": _text(m.get("Type")), "name": _text(m.get("Name")),
                         "source": _text(m.get("Source")),
                         "destination": _text(m.get("Destination")),
                         "rw": m["RW"] if isinstance(m.get("RW"), bool) else None}
                        for m in mounts) or None})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def inspect_digests(inspect: dict[str, Any], image: dict[str, Any]) -> tuple[str, ...]:
    """Registry digests of the container's image: RepoDigests ("repo@sha256:...") and the
    manifest descriptor (containerd image store), never the local image id."""
    out = []
    for reference in image.get("RepoDigests") or ():
        if isinstance(reference, str) and "@" in reference:
            out.append(reference.rsplit("@", 1)[1])
    descriptor = optional_obj(inspect, "ImageManifestDescriptor", "inspect.")
    if isinstance(descriptor.get("digest"), str):
        out.append(descriptor["digest"])
    return tuple(dict.fromkeys(out))


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
