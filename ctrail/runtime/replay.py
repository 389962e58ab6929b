"""Judging dead letters again: each one's original bytes back to the stage that rejected it.

- `collect` (the parse step): parsed again here, by the parser of the dead letter's dataset (or
  of the source the user names, for records ingested with the wrong `--source`). The verdict is
  known at once: the record goes to ctrail.raw for the chain (which parses it alike), or a dead
  letter to ctrail.dlq.
- a later step or stage: the item, byte for byte, back onto that stage's input topic (an event
  rejected by a step of the chain goes back to ctrail.raw, as one of our own events), where it
  is judged again (in this process in embedded mode, in the workers on Kafka). What is
  rejected is read back from ctrail.dlq (ctrail.runtime.dlq_watch) and matched here by
  `same_record`.

A record that fails again is dead-lettered again with its new reason. A dead letter's id hashes
its stage, origin, bytes and reason, so failing again for the same reason stores nothing new.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Callable, Final, Literal, Mapping, Sequence

from pydantic import ValidationError

from collector import source_of_dataset
from ctrail.bus import DLQ, EVENTS, RAW, Producer
from ctrail.bus.codec import MODEL_OF_TOPIC, RawEntry, decode, encode, event_entry
from ctrail.components import Parser, RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event, Rejection
from ctrail.runtime.chain import DETECT, ENRICH, REPLAYED, STORE
from ctrail.runtime.collect import STAGE as COLLECT, parse_record
from ctrail.runtime.deadletter import rejection
from ctrail.runtime.pipeline import STAGES

SOURCE: Final = REPLAYED                     # what the chain counts replayed records under
# Where a later step or stage reads its input: a replayed item goes back there. The chain's
# steps read ctrail.raw; the store stage also stores alerts and dead letters.
_CONSUMES: Final = {spec.name: spec.consumes for spec in STAGES}
INPUT_TOPICS: Final = {**_CONSUMES, ENRICH: (RAW,), DETECT: (RAW,),
                       STORE: (RAW, *_CONSUMES[STORE])}
ParserFor = Callable[[str], Parser]          # a `--source` name -> its parser


@dataclass(frozen=True, slots=True)
class Parsed:
    """collect: the record parses now; `entry` takes it to the chain, which parses it alike."""

    entry: RawEntry
    events: int                              # how many events it makes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Rejected again before reaching any bus; `again` is the dead letter that keeps it now."""

    again: Rejection


@dataclass(frozen=True, slots=True)
class Resubmit:
    """A later stage's item for that stage's input topic; the stage gives the verdict."""

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Unreplayable:
    why: str


Step = Parsed | Rejected | Resubmit | Unreplayable


@dataclass(frozen=True, slots=True)
class Verdict:
    dead: Rejection
    outcome: Literal["replayed", "still_rejected", "not_replayed"]
    now: Rejection | None = None             # still_rejected: the dead letter that keeps it
    why: str | None = None                   # not_replayed: why not


def original_bytes(dead: Rejection) -> bytes:
    if dead.original_encoding == "base64":
        return base64.b64decode(dead.original)
    return dead.original.encode()


def judge(dead: Rejection, parser_for: ParserFor, source: str | None = None) -> Step:
    """What replaying `dead` means; pure (a parse, or a decode), nothing is published."""
    raw = original_bytes(dead)
    if dead.stage == COLLECT:
        if dead.reason == Reason.RECORD_TOO_LARGE:
            # The reader kept only the first max_record_bytes of it: parsing that part could
            # store a cut-down event as if it were the record.
            return Unreplayable("only the start of this record was kept (it was larger than "
                                "pipeline.max_record_bytes); ingest its file again with a "
                                "higher limit")
        name = source or source_of_dataset(dead.dataset)
        if name is None:
            return Unreplayable(f"no parser makes dataset {dead.dataset!r}; name one with --source")
        # Received when it was first dead-lettered: events without a time of their own keep it.
        record = RawRecord(raw, dead.origin, dead.timestamp)
        outcome = parse_record(parser_for(name), record)
        if isinstance(outcome, Rejection):
            return Rejected(outcome)
        entry = RawEntry(name, SOURCE, dead.origin, dead.timestamp, raw)
        return Parsed(entry, sum(isinstance(item, Event) for item in outcome))
    topics = INPUT_TOPICS.get(dead.stage)
    if topics is None:
        return Unreplayable(f"no stage {dead.stage!r} to give it back to")
    return _resubmission(dead, raw, topics)


def _resubmission(dead: Rejection, raw: bytes, topics: Sequence[str]) -> Step:
    problems = []
    for topic in topics:
        try:
            # ctrail.raw takes an event as one of our own (the chain decodes it as it is).
            item = decode(EVENTS if topic == RAW else topic, raw)
        except InvalidInput as exc:
            problems.append(exc.detail)
            continue
        if topic == RAW:
            assert isinstance(item, Event)
            entry = event_entry(item, SOURCE)
            return Resubmit(RAW, entry.key, entry.encode())
        return Resubmit(topic, item.key, raw)
    # Not an item of any of the stage's inputs: the stage could only refuse it again, as
    # undecodable; it is refused here, under the origin it had.
    return Rejected(rejection(stage=dead.stage, reason=Reason.UNDECODABLE,
                              detail="; ".join(problems), origin=dead.origin, raw=raw,
                              dataset=dead.dataset))


def publish(step: Step, producer: Producer) -> None:
    """Send what `step` produced; durable once the producer is flushed."""
    match step:
        case Parsed(entry):
            producer.send(RAW, key=entry.key, value=entry.encode())
        case Rejected(again):
            producer.send(DLQ, key=again.key, value=encode(again))
        case Resubmit(topic, key, value):
            producer.send(topic, key=key, value=value)


def same_record(stage: str, original: bytes) -> tuple[str, str | bytes]:
    """What makes a rejection at `stage` the same record again: the id of the item its bytes
    hold (a stage encodes the item it decoded, which need not give the same bytes after an
    upgrade), or the bytes themselves when they hold none of our items."""
    for model in dict.fromkeys(MODEL_OF_TOPIC.values()):
        try:
            item = model.model_validate_json(original)
        except ValidationError:
            continue
        held = item.id if isinstance(item, Rejection) else item.event.id  # type: ignore[attr-defined]
        return stage, str(held)
    return stage, original


def verdict(dead: Rejection, step: Step,
            seen: Mapping[tuple[str, str | bytes], Rejection] | None) -> Verdict:
    """The verdict on `dead` once its step was published and processed; `seen` holds what the
    stages rejected meanwhile (by same_record), None when that could not be read."""
    match step:
        case Parsed():
            return Verdict(dead, "replayed")
        case Rejected(again):
            return Verdict(dead, "still_rejected", now=again)
        case Unreplayable(why):
            return Verdict(dead, "not_replayed", why=why)
    if seen is None:
        return Verdict(dead, "not_replayed", why=f"resubmitted to {dead.stage}, but its "
                                                 "verdict could not be read back")
    rejected = seen.get(same_record(dead.stage, original_bytes(dead)))
    if rejected is None:
        return Verdict(dead, "replayed")
    return Verdict(dead, "still_rejected", now=rejected)
