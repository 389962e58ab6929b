"""The detection stage's `rules-change` audit record.

When the process stage (the chain) starts, the rules it loaded are compared with the fingerprint remembered
in DATA_DIR/detection/rules.json (detectors.rule_fingerprint). If rules were added, removed or
modified, one audit event names them; the very first start names the whole set as added.

Why through the pipeline's own bus: the stage is built inside a Pipeline that already holds it
(the local bus is locked by this very process; Kafka is connected), so
ctrail.audit.trail.record, which spools or opens the bus anew, would only take a detour.
Published here, the record lands on ctrail.raw, where this pipeline's chain (or the process
workers) stores it like any event.

Order: publish and flush, then remember. A crash in between records the change again at the
next start, with the same event id (from the generation and the new set's digest), so the
stores keep it once.
"""

from __future__ import annotations

import logging
from typing import Final

from ctrail.audit.trail import audit_event, spool
from ctrail.bus import RAW, Bus
from ctrail.bus.codec import publish_event
from ctrail.settings import Settings
from detectors.rule_fingerprint import (
    Remembered,
    RuleChanges,
    changes,
    fingerprint,
    load,
    save,
    set_digest,
)
from detectors.sigma_detector import SigmaDetector

log = logging.getLogger(__name__)
ACTION: Final = "rules-change"


def record_rule_changes(settings: Settings, detector: SigmaDetector, bus: Bus) -> RuleChanges:
    """Publish one `rules-change` audit event if the loaded rules differ from the remembered
    ones, then remember them; returns what changed (empty when nothing did)."""
    path = settings.data_dir / "detection" / "rules.json"
    loaded = ({rule.id for rule in detector.rules.rules}
              | {rule.id for rule in detector.correlations.rules}
              | {rule.id for rule in detector.history.rules.rules})
    current = fingerprint(settings.detection.rule_paths, loaded)
    before = load(path)
    changed = changes(before.rules, current)
    if not changed:
        return changed
    generation = before.generation + 1
    event = audit_event(ACTION, {
        "added": changed.added, "removed": changed.removed, "modified": changed.modified,
        "rules": len(current), "generation": generation,
        "rule_paths": [str(p) for p in settings.detection.rule_paths]},
        identity=f"{ACTION}\x00{generation}\x00{set_digest(current)}")
    if bus.writes(RAW):
        producer = bus.producer()       # only now: on Kafka each producer is a connection
        publish_event(producer, event, ACTION)
        producer.flush()
    else:                               # `ctrail run`'s intake process writes ctrail.raw
        spool(settings, event)
    save(path, Remembered(generation, current))
    log.info("The rule set changed since the last start.", extra={
        "added": len(changed.added), "removed": len(changed.removed),
        "modified": list(changed.modified), "event_id": event.event.id})
    return changed
