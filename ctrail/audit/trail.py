"""Our own audit trail: who searched, hunted, exported or verified evidence, ran a report,
expired records, replayed dead letters, and how the rule set changed.

Each action becomes an Event of dataset `containertrail.audit` on ctrail.raw, so the chain
stores it and it is forwarded to the configured outputs, archived as evidence and searchable like any
event (`ctrail search 'event.dataset:containertrail.audit'`). The details of an action (query,
time range, counts, files) are in event.original as JSON: kept verbatim, but out of the
free-text index, so searching for a word does not find the earlier searches for it.

How a record reaches the bus:
- Kafka: the command publishes it, with whatever an earlier command had to spool in the same
  data directory; when Kafka is unavailable it goes to the spool.
- The local bus belongs to one process (`ctrail run` or `ctrail ingest`), so a command never
  opens it for a record: opening it would scan the events log and could make a `ctrail run`
  starting at that moment fail with "in use". The record goes to DATA_DIR/audit-spool.jsonl
  (ctrail.audit.spool), fsynced; `ctrail run` publishes the spool every few seconds and
  `ctrail ingest` when it starts.
- The detection stage records rule changes itself, through its pipeline's own producer
  (ctrail.runtime.rule_audit).
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from ctrail.audit import spool as audit_spool
from ctrail.bus.codec import encode, publish_event
from ctrail.errors import Retryable
from ctrail.event import Event, EventInfo, Host, User
from ctrail.identity import event_id
from ctrail.settings import Settings

log = logging.getLogger(__name__)
DATASET: Final = "containertrail.audit"
Outcome = Literal["success", "failure"]
# ECS event.category and event.type per action (ECS allowed values); unknown actions are
# configuration / access.
CATEGORIES: Final = {
    "search": ("database",), "alerts-search": ("database",), "hunt": ("database",),
    "timeline": ("database",), "dlq-replay": ("database",),
    "evidence-export": ("file",), "evidence-verify": ("file",), "evidence-expire": ("file",),
    "evidence-restore": ("file",),
    "report-run": ("file",), "rules-change": ("configuration",),
    "console-login": ("authentication",), "console-logout": ("authentication",),
    "console-export": ("database",), "alert-triage": ("configuration",),
    "console-users": ("iam",)}
TYPES: Final = {"dlq-replay": ("change",), "evidence-expire": ("deletion",),
                "evidence-restore": ("creation",),
                "report-run": ("creation",), "rules-change": ("change",),
                "console-login": ("start",), "console-logout": ("end",),
                "alert-triage": ("change",), "console-users": ("user", "change")}


def audit_event(action: str, details: dict[str, Any], user: str | None = None,
                now: datetime | None = None, identity: str | None = None,
                outcome: Outcome = "success") -> Event:
    """The Event recording `action`. Its id hashes the whole record (so two searches are two
    events), or `identity` when given: a caller that may record the same action again after a
    crash passes one, so the stores keep it once."""
    now = now or datetime.now(timezone.utc)
    user = user or _os_user()
    original = orjson.dumps({"action": action, "user": user, "time": now.isoformat(),
                             "pid": os.getpid(), **details}, option=orjson.OPT_SORT_KEYS).decode()
    return Event.model_validate({
        "@timestamp": now, "message": f"{user} ran {action}",
        "event": EventInfo(id=event_id(DATASET, (identity or original).encode()), kind="event",
                           category=CATEGORIES.get(action, ("configuration",)),
                           type=TYPES.get(action, ("access",)), action=action,
                           outcome=outcome, dataset=DATASET, module="containertrail",
                           original=original, ingested=now),
        "user": User(name=user), "host": Host(name=socket.gethostname())})


def record(settings: Settings, action: str, details: dict[str, Any],
           user: str | None = None, outcome: Outcome = "success") -> Event:
    """Publish one audit event, or spool it (see the module docstring); never fails the
    command it records: a record that can be neither published nor spooled (no write access
    to the data directory, a full disk) is logged whole, as the last place left for it.
    `user` is who acted (a console user), the OS user when not given."""
    event = audit_event(action, details, user, outcome=outcome)
    try:
        if settings.bus.single_process:
            spool(settings, event)
        else:
            _publish(settings, event)
    except OSError as exc:
        log.error("The audit record could not be kept; here it is.",
                  extra={"action": action, "error": str(exc), "record": encode(event).decode()})
    return event


def _publish(settings: Settings, event: Event) -> None:
    """On Kafka: publish, together with what an earlier command had to spool (Kafka was down
    then); spool again if Kafka is down now."""
    try:
        bus = settings.bus.build(settings.data_dir)
        try:
            producer = bus.producer()
            audit_spool.drain(settings.data_dir, producer)
            publish_event(producer, event, "audit-trail")
            producer.flush()
        finally:
            bus.close()
    except Retryable as exc:
        path = spool(settings, event)
        log.warning("The audit record went to the spool file.",
                    extra={"action": event.event.action, "spool": str(path), "error": str(exc)})


def period(time_from: datetime | None, time_to: datetime | None) -> dict[str, str | None]:
    """The time range a command read, for its details (None: unbounded)."""
    return {"from": time_from.isoformat() if time_from else None,
            "to": time_to.isoformat() if time_to else None}


def spool(settings: Settings, event: Event) -> Path:
    """Append the event to DATA_DIR/audit-spool.jsonl for a pipeline to publish."""
    return audit_spool.append(settings.data_dir, encode(event))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
