"""Source: the Docker Engine's event stream (GET /events on its unix socket), live.

The stream is chunked JSON, one event a line. A reader thread keeps it open, reconnecting with
backoff, and resumes with `since=` the last event's timeNano. The daemon replays events at or
after `since`, so events at exactly that nanosecond which were already read are skipped by their
hash. The checkpoint (that timeNano and those hashes) is saved in commit(), after the events are
durable, so a restart resumes after the last published event. The daemon keeps only its most
recent events (256 in moby's daemon/events) for replay: an outage longer than that loses the rest.

For a container create or start the container is inspected once (GET /containers/{id}/json, and
GET /images/{id}/json for its RepoDigests) to attach what the event lacks: labels, image digests,
the privileged flag, mounts, the configured user. The record is then
`{"event": <the event as sent>, "inspect": {...}, "image": {...}}`; a container already gone
(404) gets the bare event.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import queue
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Iterable, Literal, Sequence
from urllib.parse import quote, urlencode

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from ctrail.components import RawRecord
from ctrail.durable import write_atomic

log = logging.getLogger(__name__)
INSPECTED_ACTIONS: Final = frozenset({"create", "start"})
CACHE_ENTRIES: Final = 4096


class DockerEventsConfig(BaseModel):
    """Stream Docker Engine events from the daemon's API socket."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["docker_events"] = "docker_events"
    socket: Path = Field(Path("/var/run/docker.sock"), description="The Engine API socket.")
    filters: dict[str, list[str]] = Field(
        default_factory=dict, description='GET /events filters, e.g. {type: [container]}.')
    inspect: bool = Field(True, description="Inspect containers on create and start.")
    request_timeout_secs: PositiveFloat = Field(10.0, description="For inspect requests.")
    reconnect_max_secs: PositiveFloat = Field(30.0, description="Longest reconnect backoff.")

    @property
    def parser_name(self) -> str:
        return "docker-events"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "DockerEventsSource":
        checkpoints = data_dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        return DockerEventsSource(self, checkpoints / f"{name}.json", max_record_bytes)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the daemon's unix socket (the Host header is required but unused)."""

    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("docker", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        self.sock = sock


class Mark:
    """Where the stream is: the newest timeNano, and the events seen at exactly that time."""

    def __init__(self, nano: int = 0, seen: Iterable[str] = ()) -> None:
        self.nano, self.seen = nano, set(seen)

    def is_new(self, nano: int, key: str) -> bool:
        return nano > self.nano or (nano == self.nano and key not in self.seen)

    def advance(self, nano: int, key: str) -> None:
        if nano > self.nano:
            self.nano, self.seen = nano, set()
        self.seen.add(key)

    @property
    def since(self) -> str:
        return f"{self.nano // 10**9}.{self.nano % 10**9:09d}"


class DockerEventsSource:
    def __init__(self, config: DockerEventsConfig, checkpoint: Path, max_record_bytes: int) -> None:
        self.config = config
        self.checkpoint = checkpoint
        self.cap = max_record_bytes
        saved = orjson.loads(checkpoint.read_bytes()) if checkpoint.exists() else {}
        self._committed = Mark(saved.get("nano", 0), saved.get("seen", ()))
        self._read = Mark(self._committed.nano, self._committed.seen)
        self._pending: dict[str, tuple[int, str]] = {}   # origin -> (timeNano, key)
        self._queue: queue.Queue[RawRecord] = queue.Queue(maxsize=1000)
        self._inspected: dict[str, dict[str, Any] | None] = {}
        self._stop = threading.Event()
        self._stream: UnixHTTPConnection | None = None
        self.connected = threading.Event()              # for tests and readiness
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def read(self, max_records: int) -> list[RawRecord]:
        try:
            batch = [self._queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        while len(batch) < max_records:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def commit(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            nano, key = self._pending.pop(record.origin, (0, ""))
            if key:
                self._committed.advance(nano, key)
        if not records or self._committed.nano == 0:
            return
        state = {"nano": self._committed.nano, "seen": sorted(self._committed.seen)}
        write_atomic(self.checkpoint, orjson.dumps(state))

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None and stream.sock is not None:
            try:
                stream.sock.shutdown(socket.SHUT_RDWR)     # unblocks the reader thread
            except OSError:
                pass
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.25
        while not self._stop.is_set():
            try:
                self._follow()
                delay = 0.25                                 # a clean end: reconnect at once
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self._stop.is_set():
                    return
                log.warning("Docker events stream failed; reconnecting.",
                            extra={"socket": str(self.config.socket), "error": str(exc),
                                   "retry_secs": delay})
            self.connected.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, self.config.reconnect_max_secs)

    def _follow(self) -> None:
        query: dict[str, str] = {}
        if self._read.nano:
            query["since"] = self._read.since
        if self.config.filters:
            query["filters"] = json.dumps(self.config.filters)
        conn = UnixHTTPConnection(self.config.socket, timeout=None)   # a stream waits forever
        self._stream = conn
        try:
            conn.request("GET", "/events" + (f"?{urlencode(query)}" if query else ""))
            response = conn.getresponse()
            if response.status != 200:
                raise ValueError(f"GET /events answered {response.status}")
            self.connected.set()
            while not self._stop.is_set():
                line = response.readline(self.cap + 1)
                if not line:
                    return                                   # the daemon closed the stream
                truncated = len(line) > self.cap and not line.endswith(b"\n")
                while truncated:                             # skip the rest; the start is kept
                    rest = response.readline(1 << 20)
                    if not rest or rest.endswith(b"\n"):
                        break
                if line.strip():
                    self._accept(line.rstrip(b"\r\n")[:self.cap], truncated)
        finally:
            self._stream = None
            conn.close()

    def _accept(self, raw: bytes, truncated: bool = False) -> None:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None                                     # the parser dead-letters it
        nano = _nano(event) if isinstance(event, dict) else 0
        key = hashlib.blake2b(raw, digest_size=12).hexdigest()
        if not self._read.is_new(nano, key):
            return                                           # replayed by since=: seen already
        data = raw
        if isinstance(event, dict) and self.config.inspect:
            extra = self._details(event)
            if extra:
                data = b'{"event":' + raw + b"," + orjson.dumps(extra)[1:]
        self._read.advance(nano, key)
        origin = f"{self.config.socket} events {nano}-{key}"
        self._pending[origin] = (nano, key)
        record = RawRecord(data, origin, datetime.now(timezone.utc), truncated)
        while not self._stop.is_set():
            try:
                self._queue.put(record, timeout=0.5)         # a full queue slows the stream
                return
            except queue.Full:
                continue

    def _details(self, event: dict[str, Any]) -> dict[str, Any] | None:
        actor = event.get("Actor")
        if not isinstance(actor, dict):
            actor = {}
        container_id = actor.get("ID") or event.get("id")
        if event.get("Type", "container") != "container" or not isinstance(container_id, str):
            return None
        if event.get("Action") in ("destroy", "remove"):
            self._inspected.pop(container_id, None)
            return None
        if event.get("Action", event.get("status")) not in INSPECTED_ACTIONS:
            return None
        if container_id not in self._inspected:
            if len(self._inspected) >= CACHE_ENTRIES:
                self._inspected.pop(next(iter(self._inspected)))
            self._inspected[container_id] = self._inspect(container_id)
        return self._inspected[container_id]

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            container = self._get(f"/containers/{quote(container_id, safe='')}/json")
            if container is None:
                return None                                  # gone already: the bare event
            image = None
            if isinstance(container.get("Image"), str):
                image = self._get(f"/images/{quote(container['Image'], safe='')}/json")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            log.warning("Could not inspect a container; its event goes without the details.",
                        extra={"container": container_id, "error": str(exc)})
            return None
        return selected(container, image)

    def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON object at `path`, None on 404."""
        conn = UnixHTTPConnection(self.config.socket, self.config.request_timeout_secs)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read(16 * 1024 * 1024)
        finally:
            conn.close()
        if response.status == 404:
            return None
        if response.status != 200:
            raise ValueError(f"GET {path} answered {response.status}")
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise ValueError(f"GET {path} did not answer an object")
        return doc


def selected(container: dict[str, Any], image: dict[str, Any] | None) -> dict[str, Any]:
    """What an event lacks, in the Engine API's own names (the full inspect holds the
    environment, which may carry secrets: it is left out)."""
    config = container.get("Config") or {}
    host = container.get("HostConfig") or {}
    inspect = {
        "Id": container.get("Id"), "Name": container.get("Name"), "Image": container.get("Image"),
        "Config": {"Image": config.get("Image"), "User": config.get("User"),
                   "Labels": config.get("Labels")},
        "HostConfig": {"Privileged": host.get("Privileged")},
        "Mounts": [{k: m.get(k) for k in ("Type", "Name", "Source", "Destination", "RW")}
                   for m in container.get("Mounts") or () if isinstance(m, dict)],
    }
    if isinstance(container.get("ImageManifestDescriptor"), dict):
        inspect["ImageManifestDescriptor"] = {
            "digest": container["ImageManifestDescriptor"].get("digest")}
    out: dict[str, Any] = {"inspect": inspect}
    if image is not None:
        out["image"] = {"Id": image.get("Id"), "RepoDigests": image.get("RepoDigests") or []}
    return out


def _nano(event: dict[str, Any]) -> int:
    nano, seconds = event.get("timeNano"), event.get("time")
    if isinstance(nano, int):
        return nano
    return seconds * 10**9 if isinstance(seconds, int) else 0
