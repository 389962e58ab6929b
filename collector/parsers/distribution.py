"""Docker Distribution (registry:2, CNCF distribution) notification envelopes to ECS Events.

The registry posts `{"events": [...]}` (media type application/vnd.docker.distribution.events.v2+json)
and retries a failed envelope, possibly batched differently. So each event becomes its own Event
whose `event.original` is that event's exact bytes inside the envelope and whose id hashes those
bytes: a re-batched retry is stored once.

The image reference goes to `registry.*` (repository, digest, tag), not to `container.image.*`:
ECS keeps that group for the image a running container was started from, and a push is not a
container. The digest is also in `related.hash`, where a container's image digest meets it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from collector.parsers.common import (
    RedactingParser,
    decode_text,
    load_object,
    member_spans,
    optional_int,
    optional_obj,
    optional_str,
    parse_time,
    split_address,
)
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event
from ctrail.identity import event_id

DATASET: Final = "registry.distribution"
EVENT_TYPES: Final = {"push": "creation", "mount": "creation", "pull": "access",
                      "delete": "deletion"}


class DistributionParser(RedactingParser):
    """One notification envelope -> one Event per event in it (zero for an empty envelope)."""

    dataset: ClassVar[str] = DATASET

    def parse(self, record: RawRecord) -> list[Event]:
        text = decode_text(record.data)
        envelope = load_object(record.data, "notification envelope")
        events = envelope.get("events")
        if not isinstance(events, list):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "an envelope without an events array")
        spans = member_spans(text, "events")
        if spans is None or len(spans) != len(events):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "envelope events could not be delimited")
        out = []
        for i, (item, (start, end)) in enumerate(zip(events, spans)):
            if not isinstance(item, dict):
                raise InvalidInput(Reason.SCHEMA_MISMATCH, f"events[{i}] is not an object")
            out.append(to_event(item, text[start:end], record))
        return out


def to_event(item: dict[str, Any], original: str, record: RawRecord) -> Event:
    action = optional_str(item, "action")
    if action is None:
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "an event without an action")
    target = optional_obj(item, "target", "target.")
    request = optional_obj(item, "request", "request.")
    actor = optional_obj(item, "actor", "actor.")
    source = optional_obj(item, "source", "source.")
    when = optional_str(item, "timestamp")
    ip, address = split_address(optional_str(request, "addr", "request."))
    user = optional_str(actor, "name", "actor.")
    digest = optional_str(target, "digest", "target.")
    size = optional_int(target, "size", "target.")
    doc: dict[str, Any] = {
        "@timestamp": parse_time(when, "timestamp") if when else record.received,
        "event": {
            "id": event_id(DATASET, original.encode()), "kind": "event",
            "category": ("web",), "type": (EVENT_TYPES.get(action, "info"),),
            "action": action, "outcome": "success", "dataset": DATASET, "module": "registry",
            "original": original, "ingested": record.received,
        },
        "registry": {
            "type": "distribution",
            "event_id": optional_str(item, "id"),
            "repository": optional_str(target, "repository", "target."),
            "digest": digest,
            "tag": optional_str(target, "tag", "target."),
            "media_type": optional_str(target, "mediaType", "target."),
            "size": size if size is not None else optional_int(target, "length", "target."),
            "url": optional_str(target, "url", "target."),
            "from_repository": optional_str(target, "fromRepository", "target."),
            "host": optional_str(request, "host", "request."),
            "instance": optional_str(source, "addr", "source.")
            or optional_str(source, "instanceID", "source."),
        },
        "user": {"name": user} if user else None,
        "source": {"ip": ip, "address": address or ip} if ip or address else None,
        "user_agent": {"original": ua} if (ua := optional_str(request, "useragent", "request."))
        else None,
        "http": {"request": {"id": optional_str(request, "id", "request."),
                             "method": optional_str(request, "method", "request.")}}
        if request else None,
        "related": {"user": (user,) if user else (), "ip": (ip,) if ip else (),
                    "hash": (digest,) if digest else ()},
        "tags": () if when else ("timestamp_from_ingest",),
    }
    return Event.model_validate(doc)
