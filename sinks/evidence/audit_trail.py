"""Our own audit trail: who searched, exported evidence, ran a report or expired records.

Each action becomes an Event of dataset `containertrail.audit`, published to ctrail.events so
it is stored, archived as evidence and searchable like any event. The local bus belongs to one
process at a time: when `ctrail run` holds it, the record goes to DATA_DIR/audit-spool.jsonl
instead (one Event a line, in the bus encoding) and a warning says so.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from datetime import datetime, timezone
from typing import Any

import orjson

from collector.identity import event_id
from ctrail.bus import EVENTS
from ctrail.bus.codec import encode
from ctrail.errors import Retryable
from ctrail.event import Event, EventInfo, Host, User
from ctrail.settings import Settings

log = logging.getLogger(__name__)
DATASET = "containertrail.audit"
CATEGORIES = {"search": ("database",), "evidence-export": ("file",),
              "evidence-expire": ("file",), "report-run": ("file",)}


def audit_event(action: str, details: dict[str, Any], user: str | None = None,
                now: datetime | None = None) -> Event:
    now = now or datetime.now(timezone.utc)
    user = user or _os_user()
    original = orjson.dumps({"action": action, "user": user, "time": now.isoformat(),
                             "pid": os.getpid(), **details}, option=orjson.OPT_SORT_KEYS).decode()
    return Event.model_validate({
        "@timestamp": now, "message": f"{user} ran {action}",
        "event": EventInfo(id=event_id(DATASET, original.encode()), kind="event",
                           category=CATEGORIES.get(action, ("configuration",)), type=("access",),
                           action=action, outcome="success", dataset=DATASET,
                           module="containertrail", original=original, ingested=now),
        "user": User(name=user), "host": Host(name=socket.gethostname())})


def record(settings: Settings, action: str, details: dict[str, Any]) -> Event:
    """Publish one audit event; never fails the command it records."""
    event = audit_event(action, details)
    try:
        bus = settings.bus.build(settings.data_dir)
        try:
            producer = bus.producer()
            producer.send(EVENTS, event.key, encode(event))
            producer.flush()
        finally:
            bus.close()
    except Retryable as exc:
        spool = settings.data_dir / "audit-spool.jsonl"
        spool.parent.mkdir(parents=True, exist_ok=True)
        with open(spool, "ab") as out:
            out.write(encode(event) + b"\n")
        log.warning("The audit record went to the spool file.",
                    extra={"action": action, "spool": str(spool), "error": str(exc)})
    return event


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
