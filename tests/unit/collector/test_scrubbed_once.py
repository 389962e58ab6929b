"""A record is redacted once: at intake (Parser.scrub), never again when the chain parses it.

The redactor is not idempotent on its own output: run again over a scrubbed record it hashes
some hashes a second time (a whole last-applied-configuration, a PEM body), so the same secret
would be stored as H(x) by one path and H(H(x)) by another, and a search by a secret's hash
would miss half of its uses. It would also repeat a walk of every event for nothing."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from collector.parsers.falco import FalcoParser
from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import PREFIX, Redactor
from ctrail.bus.codec import RawEntry
from ctrail.components import RawRecord
from ctrail.event import Event
from ctrail.runtime.chain import REPLAYED, parse_entry
from tests.unit.collector.test_redaction import (
    PLANTED,
    falco_lines,
    gke_line,
    planted_audit_lines,
)

NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)
REDACTOR = Redactor(b"k" * 32)


def body(event: Event) -> Any:
    return event.kubernetes.audit if event.kubernetes and event.kubernetes.audit else event.falco


def through_the_chain(parser: K8sAuditParser | FalcoParser, format: str,
                      line: bytes) -> list[Event]:
    """What `ctrail run` does: the collector appends the scrubbed record to ctrail.raw, the
    chain's parse step reads it back."""
    entry = RawEntry(source="src", format=format, origin="f:1", received=NOW,
                     data=parser.scrub(line))
    parsed = parse_entry(entry, lambda name: parser)
    assert isinstance(parsed, list)
    return [e for e in parsed if isinstance(e, Event)]


def test_a_secret_hashes_the_same_through_intake_and_the_chain_as_parsed_directly() -> None:
    audit, falco = K8sAuditParser(REDACTOR), FalcoParser(REDACTOR)
    cases = [(audit, "k8s-audit", line) for line in [*planted_audit_lines(), gke_line()]]
    cases += [(falco, "falco", line) for line in falco_lines()]
    for parser, format, line in cases:
        direct = parser.parse(RawRecord(line, "f:1", NOW))
        chained = through_the_chain(parser, format, line)
        assert [body(e) for e in chained] == [body(e) for e in direct], line[:120]
        stored = "\n".join(e.model_dump_json() for e in chained)
        assert [name for name, value in PLANTED.items() if value in stored] == []
        assert all("redacted" in e.tags and PREFIX in e.event.original for e in chained)


def test_the_chain_keeps_the_scrubbed_record_as_the_original() -> None:
    """Evidence 'byte for byte' is what intake appended (a GKE entry stays a GKE entry), not a
    re-serialised copy of the parsed event."""
    parser = K8sAuditParser(REDACTOR)
    (event,) = through_the_chain(parser, "k8s-audit", gke_line())
    assert event.event.original == parser.scrub(gke_line()).decode()
    assert "protoPayload" in orjson.loads(event.event.original)


def test_a_replayed_record_is_redacted_by_its_parser() -> None:
    """`dlq replay --source k8s-audit` of a record first ingested with the wrong --source: no
    audit scrub ever ran over it, so the chain's parser redacts it."""
    parser = K8sAuditParser(REDACTOR)
    line = planted_audit_lines()[0]
    entry = RawEntry(source=REPLAYED, format="k8s-audit", origin="f:1", received=NOW, data=line)
    parsed = parse_entry(entry, lambda name: parser)
    assert isinstance(parsed, list)
    stored = "\n".join(e.model_dump_json() for e in parsed if isinstance(e, Event))
    assert stored and [name for name, value in PLANTED.items() if value in stored] == []
