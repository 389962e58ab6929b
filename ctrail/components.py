"""The component protocols every source, parser, enricher, detector and sink implements.

Only the stage runner needs these contracts, so they are Protocols, not base classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Iterator, Protocol, Sequence

from ctrail.errors import InvalidInput
from ctrail.event import Alert, Event, Rejection
from ctrail.query import Query


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as a source read it, before parsing."""

    data: bytes
    origin: str                  # "path:line", or "endpoint request-id"
    received: datetime
    truncated: bool = False      # longer than the reader's cap: `data` holds only its start
    # Already found malformed by its source (a bad forward frame): dead-lettered at intake.
    rejected: InvalidInput | None = None
    # The records of one stream keep their order through the bus (one file's lines: one
    # container's log, one audit log); "" for the source as a whole.
    stream: str = ""
    # Scrubbed by its parser at intake (Parser.scrub; everything in ctrail.raw is): the parser
    # must not redact it again, since a redactor run over its own hashes hashes some of them
    # again (a whole last-applied-configuration, a PEM body), and it would only repeat the walk.
    scrubbed: bool = False


class EndOfInput(Exception):
    """Raised by Source.read when a finite input (a file given to `ctrail ingest`) is exhausted."""


class Source(Protocol):
    """Reads raw records from outside. Blocking.

    commit() is called only after the records' events are durable on the bus; a source that
    cannot re-read (a webhook) answers its client only then. read() again without commit()
    means that batch failed (a full disk): a source that can re-read (a tailed file) gives the
    same records again, one that cannot tells its senders to retry (503)."""

    def read(self, max_records: int) -> list[RawRecord]: ...

    def commit(self, records: Sequence[RawRecord]) -> None: ...

    def close(self) -> None: ...


class Parser(Protocol):
    dataset: ClassVar[str]

    def redact_text(self, text: str) -> str:
        """Free text (a record that did not parse, before it is dead-lettered) with what the
        redaction policy recognises in text hashed under the deployment's key."""

    def scrub(self, data: bytes) -> bytes:
        """The raw record with every secret of it hashed (collector.redact), or `data` itself
        when it holds none. Intake calls it before it appends anything: no secret is written,
        not even to the raw log. Cheap on what cannot hold a secret; never raises."""

    def parse(self, record: RawRecord) -> Sequence[Event | Rejection]:
        """Events, and a Rejection per bad part. Pure. Raises InvalidInput if the record is bad."""


class Enricher(Protocol):
    def enrich(self, event: Event) -> Event:
        """Return the event with what is known about its subject attached."""


class Detector(Protocol):
    def observe(self, event: Event) -> list[Alert]:
        """Alerts this event raises, now."""

    def advance(self, now: datetime) -> list[Alert]:
        """Alerts that become due as time moves (windows closing)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a sink did with a batch: the runner retries `retry` and dead-letters `rejected`."""

    delivered: int
    retry: tuple[Event | Alert | Rejection, ...] = ()
    rejected: tuple[Rejection, ...] = field(default_factory=tuple)


class Sink(Protocol):
    def write(self, items: Sequence[Event | Alert | Rejection]) -> WriteResult:
        """Store or deliver items idempotently (by id). Raises Retryable when it cannot now."""

    def check(self) -> None:
        """Startup health check; raises Unavailable."""

    def close(self) -> None: ...


class Store(Sink, Protocol):
    """A sink that answers searches in the language of ctrail.query (embedded or Elasticsearch).

    `kind` is "events", "alerts", "dead_letters" or "dead_letter_replays" (the verdicts of
    `ctrail dlq replay`); time_from is inclusive, time_to exclusive.
    `search` returns the newest `limit` matching documents, oldest first, as stored (ECS);
    `stream` yields the same documents in the same order a page at a time, for answers too
    large to hold (`ctrail search --format json --limit 100000`)."""

    def search(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> list[dict[str, Any]]: ...

    def stream(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> Iterator[dict[str, Any]]: ...

    def count(self, query: str | Query, kind: str = "events",
              time_from: datetime | None = None, time_to: datetime | None = None) -> int: ...
