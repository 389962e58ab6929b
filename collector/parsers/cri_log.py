"""Container log lines, as the kubelet and Docker write them, to ECS Events.

Two line formats: CRI (`<RFC 3339 nano> <stdout|stderr> <P|F> <message>`, containerd and CRI-O)
and Docker's json-file (`{"log": "...\\n", "stream": "stdout", "time": "..."}`). A runtime splits a
long line into partial pieces (CRI tag P; json-file `log` without its trailing newline). A record
may hold several raw lines joined by "\\n", as `CriReassembler` builds them: the pieces of one
logical line, all on one stream, every piece but the last partial. Its bytes are kept whole as
`event.original`, so the evidence is what the runtime wrote.

The pod, namespace, container name and container id come from the file path the kubelet chose:
/var/log/containers/<pod>_<namespace>_<container>-<id>.log,
/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log, or Docker's own
/var/lib/docker/containers/<id>/<id>-json.log. Other paths give no Kubernetes fields: guessing
from a look-alike name would attribute a log line to the wrong pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final

import orjson

from collector.parsers.common import (
    RedactingParser,
    decode_text,
    load_object,
    optional_str,
    parse_time,
)
from collector.redact import hinted
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput, Reason
from ctrail.event import Event
from ctrail.identity import event_id

DATASET: Final = "kubernetes.container_logs"
STREAMS: Final = frozenset({"stdout", "stderr"})
CONTAINERS_LINK: Final = re.compile(
    r"(?:.*/)?([a-z0-9.-]+)_([a-z0-9-]+)_(.+)-([0-9a-f]{64})\.log(?:\.[\w.-]+)?")
POD_DIR: Final = re.compile(
    r"(?:.*/)?([a-z0-9-]+)_([a-z0-9.-]+)_([0-9a-f-]{32,36})/([^/]+)/\d+\.log(?:\.[\w.-]+)?")
DOCKER_DIR: Final = re.compile(r"(?:.*/)?([0-9a-f]{64})/\1-json\.log(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Piece:
    """One raw line: its time (None if the runtime wrote none), stream, and message text."""

    time: datetime | None
    stream: str | None
    partial: bool
    message: str


def parse_line(line: str) -> Piece:
    """One CRI or json-file line; raises InvalidInput."""
    if line.startswith("{"):
        doc = load_object(line, "json-file line")
        log = doc.get("log")
        if not isinstance(log, str):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "json-file line without a string log")
        stream = optional_str(doc, "stream")
        time = optional_str(doc, "time")
        partial = not log.endswith("\n")
        return Piece(parse_time(time, "time") if time else None, check_stream(stream),
                     partial, log if partial else log[:-1])
    fields = line.split(" ", 3)
    if len(fields) < 3:
        raise InvalidInput(Reason.SCHEMA_MISMATCH, "neither a CRI nor a json-file log line")
    when, stream, tag = fields[:3]
    flag = tag.split(":", 1)[0]
    if flag not in ("P", "F"):
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"CRI tag is {tag!r:.20}, expected P or F")
    return Piece(parse_time(when, "CRI time"), check_stream(stream), flag == "P",
                 fields[3] if len(fields) > 3 else "")


def with_message(line: str, message: str) -> str:
    """A CRI or json-file line (as parse_line read it) with another message, its time,
    stream and partial flag kept."""
    if line.startswith("{"):
        doc = orjson.loads(line)
        doc["log"] = message + ("" if not doc["log"].endswith("\n") else "\n")
        return orjson.dumps(doc).decode()
    return " ".join(line.split(" ", 3)[:3] + [message])


def check_stream(stream: str | None) -> str | None:
    if stream is not None and stream not in STREAMS:
        raise InvalidInput(Reason.SCHEMA_MISMATCH, f"stream is {stream!r:.20}")
    return stream


def peek(data: bytes) -> tuple[str | None, bool] | None:
    """(stream, partial) of a raw line, or None when it is not a log line (the parser says why)."""
    try:
        piece = parse_line(data.decode("utf-8"))
    except (InvalidInput, UnicodeDecodeError):
        return None
    return piece.stream, piece.partial


def path_of(origin: str) -> str:
    """The file path of a "path:line" origin."""
    path, sep, line = origin.rpartition(":")
    return path if sep and line.isdigit() else origin


def path_fields(path: str) -> dict[str, Any]:
    """container.* and kubernetes.* from a kubelet or Docker log path."""
    if match := CONTAINERS_LINK.fullmatch(path):
        pod, namespace, name, container_id = match.groups()
        return {"container": {"id": container_id},
                "kubernetes": {"namespace": namespace, "pod": {"name": pod},
                               "container": {"name": name}}}
    if match := POD_DIR.fullmatch(path):
        namespace, pod, uid, name = match.groups()
        return {"kubernetes": {"namespace": namespace, "pod": {"name": pod, "uid": uid},
                               "container": {"name": name}}}
    if match := DOCKER_DIR.fullmatch(path):
        return {"container": {"id": match.group(1), "runtime": "docker"}}
    return {}


class ContainerLogParser(RedactingParser):
    """One logical container log line (one raw line, or reassembled pieces) -> one Event."""

    dataset: ClassVar[str] = DATASET

    def scrub(self, data: bytes) -> bytes:
        """Each piece scrubbed (RedactingParser.scrub), and the logical line too: a runtime
        cuts a long line every 16 KiB wherever it falls, so a secret, or the word that names
        one, may be in no piece whole. When the line holds a secret, its redacted text goes to
        the last piece and the pieces before it are left empty, each with its own time and
        flag, so the record still reads as the same pieces of one line."""
        if b"\n" in data:
            try:
                lines = data.decode("utf-8").split("\n")
                pieces = [parse_line(line) for line in lines]
            except (UnicodeDecodeError, InvalidInput):
                pieces = []                 # not a log line's pieces: the parser says why
            joined = "".join(piece.message for piece in pieces)
            if pieces and hinted(joined.encode()):
                redacted = self.redactor.redact_text(joined)
                if redacted != joined:
                    data = "\n".join([*(with_message(line, "") for line in lines[:-1]),
                                      with_message(lines[-1], redacted)]).encode()
        return super().scrub(data)

    def parse(self, record: RawRecord) -> list[Event]:
        text = decode_text(record.data)
        pieces = [parse_line(line) for line in text.split("\n")]
        first, last = pieces[0], pieces[-1]
        if any(p.stream != first.stream for p in pieces):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "pieces of one line on different streams")
        if any(not p.partial for p in pieces[:-1]):
            raise InvalidInput(Reason.SCHEMA_MISMATCH, "a full line before the last piece")
        tags = (() if first.time else ("timestamp_from_ingest",)) + (
            ("partial_message",) if last.partial else ())
        path = path_of(record.origin)
        doc: dict[str, Any] = {
            "@timestamp": first.time or record.received,
            "event": {
                # The origin is in the hash: the same line twice in one file (json-file lines
                # may carry no time), or in two containers' files, is two events, not one.
                "id": event_id(f"{DATASET}\x00{record.origin}", record.data),
                "kind": "event", "type": ("info",), "action": "log",
                "dataset": DATASET, "module": "kubernetes", "original": text,
                "ingested": record.received,
            },
            "message": "".join(p.message for p in pieces),
            "stream": first.stream,
            "log": {"file": {"path": path}},
            "tags": tags,
            **path_fields(path),
        }
        return [Event.model_validate(doc)]
