"""What one forward entry (tag, time, record) becomes: the RawRecord its parser reads.

container-log: the parser wants one container log line and takes pod, namespace and container
from the file path in the record's origin. So:
- the line is the record's `log` when that already is a CRI or json-file line (Fluent Bit tail
  without a parser); otherwise a json-file line is rebuilt from `log` (or `message`), `stream`,
  and `time` (or the entry's time), partial when `logtag` or `_p` is "P" (Fluent Bit's cri
  parsers), so the evidence keeps the runtime's fields;
- the path is the record's `path_key` field when configured, else it is read back from the tag:
  Fluent Bit's `Tag kube.*` on /var/log/containers/*.log gives
  kube.var.log.containers.<pod>_<ns>_<container>-<id>.log (the path with "/" turned to ".");
  /var/log/pods/... and Docker's /var/lib/docker/containers/... are mapped the same way.
  Without a path the origin is `fluent_forward <source> tag=<tag>` and no Kubernetes fields are
  guessed.
Other parsers (k8s-audit, falco, docker-events, ...) get JSON: the record's `log` or `message`
when that holds a JSON object as a string (a tailed file), else the record itself as JSON.
A record that maps to nothing the parser accepts is dead-lettered by the parser, with its data.

Origins carry no peer address on purpose: container-log event ids hash the origin, and a
re-sent chunk must give the same ids wherever the client now runs.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Final

import orjson

from collector.parsers.cri_log import peek
from collector.sources.forward_protocol import EventTime
from ctrail.components import RawRecord

CONTAINER_LOG: Final = "container-log"
TAG_PATHS: Final = (
    (re.compile(r"(?:.*\.)?var\.log\.containers\.([^/]+\.log)"), "/var/log/containers/{0}"),
    (re.compile(r"(?:.*\.)?var\.log\.pods\.([a-z0-9-]+_[a-z0-9.-]+_[0-9a-f-]{32,36})"
                r"\.([^./]+)\.(\d+\.log)"), "/var/log/pods/{0}/{1}/{2}"),
    (re.compile(r"(?:.*\.)?var\.lib\.docker\.containers\.([0-9a-f]{64})\.(\1-json\.log)"),
     "/var/lib/docker/containers/{0}/{1}"),
)


def entry_record(source: str, tag: str, time_ns: int, record: dict[Any, Any], parser: str,
                 path_key: str | None, received: datetime) -> RawRecord:
    if parser == CONTAINER_LOG:
        path = record.get(path_key) if path_key else None
        path = path if isinstance(path, str) and path else tag_path(tag)
        origin = path or f"fluent_forward {source} tag={tag}"
        return RawRecord(container_line(record, time_ns), origin, received, stream=origin)
    return RawRecord(json_document(record, time_ns), f"fluent_forward {source} tag={tag}",
                     received)


def tag_path(tag: str) -> str | None:
    """The kubelet or Docker log path a tail input's tag was made from, or None."""
    for pattern, template in TAG_PATHS:
        if match := pattern.fullmatch(tag):
            return template.format(*match.groups())
    return None


def container_line(record: dict[Any, Any], time_ns: int) -> bytes:
    log = record.get("log")
    if isinstance(log, str) and peek(line := log.rstrip("\n").encode()) is not None:
        return line
    text = log if isinstance(log, str) else record.get("message")
    if not isinstance(text, str):
        return json_document(record, time_ns)
    partial = record.get("logtag") == "P" or record.get("_p") == "P"
    document: dict[str, str] = {"log": text if partial or text.endswith("\n") else text + "\n"}
    if isinstance(stream := record.get("stream"), str):
        document["stream"] = stream
    when = record.get("time")
    document["time"] = when if isinstance(when, str) else rfc3339(time_ns)
    return orjson.dumps(document)


def json_document(record: dict[Any, Any], time_ns: int) -> bytes:
    for key in ("log", "message"):
        text = record.get(key)
        if isinstance(text, str) and text.lstrip().startswith("{"):
            return text.strip().encode()
    try:
        return orjson.dumps(record, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # Binary map keys have no JSON form: the parser dead-letters this text, nothing is lost.
        return repr(record).encode()


def rfc3339(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, timezone.utc):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _jsonable(value: Any) -> Any:
    if isinstance(value, EventTime):
        return rfc3339(value.nanos)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)
