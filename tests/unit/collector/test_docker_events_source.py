"""The docker_events source against a stand-in Docker Engine on a local unix socket.

No daemon runs here, so a small server speaks the Engine API as moby does: GET /events streams
the real sample events (engine_api_v1_24_events_example.jsonl) chunked, one JSON object a line,
replaying from `since` inclusive; GET /containers/{id}/json answers an inspect document for the
sample container and 404 `{"message": "No such container: ..."}` otherwise.
"""

from __future__ import annotations

import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import pytest

from collector.parsers.docker_event import DockerEventParser
from collector.sources.docker_events import DockerEventsConfig, DockerEventsSource
from ctrail.components import RawRecord

CID = "ede54ee1afda366ab42f824e8a5ffd195155d853ceaec74a927f249ea270c743"
IMAGE_ID = "sha256:13b7e93f8a3d2d2d3c9c9d4a7c1e0a5a3c7c2f6b9d7f2c1f0b9e0d6c8b4a2f1e"
DIGEST = "sha256:7144f7bab3d4c2648d7e59409f15ec52a18006a128c733fcff20d3a4a54ba44a"
INSPECT: dict[str, Any] = {        # GET /containers/{id}/json, trimmed to the documented shape
    "Id": CID, "Created": "2016-04-29T15:18:21.381709551Z", "Path": "sh", "Args": [],
    "State": {"Status": "running", "Running": True, "Pid": 4242, "ExitCode": 0},
    "Image": IMAGE_ID, "Name": "/my-container", "RestartCount": 0, "Driver": "overlay2",
    "HostConfig": {"Privileged": True, "NetworkMode": "bridge", "Binds": ["/:/host"]},
    "Mounts": [{"Type": "bind", "Source": "/", "Destination": "/host", "Mode": "",
                "RW": True, "Propagation": "rprivate"},
               {"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data",
                "Destination": "/data", "Driver": "local", "Mode": "z", "RW": False,
                "Propagation": ""}],
    "Config": {"Hostname": "ede54ee1afda", "User": "1000:1000", "Image": "alpine",
               "Env": ["PATH=/usr/bin", "DB_PASSWORD=never-stored"], "Cmd": ["sh"],
               "Labels": {"com.example.some-label": "some-label-value"}},
}
IMAGE = {"Id": IMAGE_ID, "RepoTags": ["alpine:latest"], "RepoDigests": [f"alpine@{DIGEST}"]}


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The stand-in daemon: its event log, and what clients asked."""

    daemon_threads = True

    def __init__(self, path: Path, events: list[bytes]) -> None:
        self.events = list(events)
        self.queries: list[dict[str, list[str]]] = []
        self.gets: list[str] = []
        self.drop_after: int | None = None    # end the stream after this many events, once
        self.changed = threading.Condition()
        self.stopping = False
        super().__init__(str(path), Handler)

    def publish(self, *events: bytes) -> None:
        with self.changed:
            self.events.extend(events)
            self.changed.notify_all()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Engine

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        url = urlsplit(self.path)
        self.server.gets.append(url.path)
        if url.path == "/events":
            return self._events(parse_qs(url.query))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[0] == "containers" and parts[2:] == ["json"]:
            found = INSPECT if parts[1] == CID else None
            return self._json(found, f"No such container: {parts[1]}")
        if parts[0] == "images" and parts[2:] == ["json"]:
            return self._json(IMAGE if parts[1] == IMAGE_ID else None, f"No such image: {parts[1]}")
        self._json(None, "page not found")

    def _json(self, doc: dict[str, Any] | None, missing: str) -> None:
        body = orjson.dumps(doc if doc is not None else {"message": missing})
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self, query: dict[str, list[str]]) -> None:
        self.server.queries.append(query)
        since = _nano(query["since"][0]) if "since" in query else None
        types = orjson.loads(query["filters"][0]).get("type") if "filters" in query else None
        # Subscribed before the headers go out, as moby does. No since: only what happens
        # from now on (the daemon's default).
        sent, position = 0, 0 if since is not None else len(self.server.events)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            with self.server.changed:
                while position >= len(self.server.events) and not self.server.stopping:
                    self.server.changed.wait(0.05)
                if self.server.stopping:
                    return
                raw = self.server.events[position]
            position += 1
            event = orjson.loads(raw)
            if since is not None and event["timeNano"] < since:
                continue
            if types and event["Type"] not in types:
                continue
            line = raw + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            sent += 1
            if self.server.drop_after is not None and sent >= self.server.drop_after:
                self.server.drop_after = None
                self.wfile.write(b"0\r\n\r\n")      # the daemon ends the stream (a restart)
                self.close_connection = True
                return

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _nano(since: str) -> int:
    seconds, _, fraction = since.partition(".")
    return int(seconds) * 10**9 + int(fraction.ljust(9, "0")[:9] or 0)


@pytest.fixture
def samples(real_data: Path) -> list[bytes]:
    path = real_data / "docker-events/engine_api_v1_24_events_example.jsonl"
    return path.read_bytes().splitlines()


@pytest.fixture
def engine(tmp_path: Path, samples: list[bytes]):  # type: ignore[no-untyped-def]
    server = Engine(tmp_path / "docker.sock", [])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    with server.changed:
        server.stopping = True
        server.changed.notify_all()
    server.shutdown()
    server.server_close()


_sources: list[DockerEventsSource] = []


@pytest.fixture(autouse=True)
def _close_sources():  # type: ignore[no-untyped-def]
    yield
    while _sources:
        _sources.pop().close()


def start(engine: Engine, tmp_path: Path, **options: Any) -> DockerEventsSource:
    config = DockerEventsConfig(socket=Path(engine.server_address), **options)  # type: ignore[arg-type]
    source = config.build("docker", tmp_path / "data", 1 << 20)
    _sources.append(source)
    assert source.connected.wait(5)
    return source


def collect(source: DockerEventsSource, count: int, timeout: float = 5.0) -> list[RawRecord]:
    """Read and commit (as the collector does after publishing) until `count` records came."""
    out: list[RawRecord] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        batch = source.read(100)
        source.commit(batch)
        out.extend(batch)
    return out


def actions(records: list[RawRecord]) -> list[str]:
    return [e.event.action for r in records for e in DockerEventParser().parse(r)]


def test_the_stream_is_read_and_create_and_start_carry_the_inspection(
        engine: Engine, tmp_path: Path, samples: list[bytes]) -> None:
    source = start(engine, tmp_path)
    engine.publish(*samples)
    records = collect(source, 9)
    events = [e for r in records for e in DockerEventParser().parse(r)]
    assert [e.event.action for e in events] == [
        "pull", "create", "attach", "connect", "start", "resize", "die", "disconnect", "destroy"]
    create = events[1]
    assert create.container is not None and create.container.security_context is not None
    assert create.container.security_context.privileged is True
    assert create.container.labels == {"com.example.some-label": "some-label-value"}
    assert create.container.image is not None and create.container.image.hash is not None
    assert create.container.image.hash.all == (DIGEST,)
    assert create.related is not None and DIGEST in create.related.hash
    assert create.docker is not None and create.docker.user == "1000:1000"
    assert create.docker.image_id == IMAGE_ID
    assert [(m.type, m.source, m.destination, m.rw) for m in create.docker.mounts or ()] == [
        ("bind", "/", "/host", True),
        ("volume", "/var/lib/docker/volumes/data/_data", "/data", False)]
    assert b"never-stored" not in b"".join(r.data for r in records)   # Env is not copied
    assert events[4].container == create.container                  # start: the same details
    assert events[2].container is not None and events[2].container.labels is None
    # Inspected once, not per event; the bare event keeps the id a file of events gives it.
    assert engine.gets.count(f"/containers/{CID}/json") == 1
    assert create.event.id == DockerEventParser().parse(
        RawRecord(samples[1], "file:2", create.event.ingested))[0].event.id


def test_a_container_already_gone_gives_the_bare_event(engine: Engine, tmp_path: Path,
                                                       samples: list[bytes]) -> None:
    source = start(engine, tmp_path)
    gone = samples[1].replace(CID.encode(), b"f" * 64)
    engine.publish(gone)
    (record,) = collect(source, 1)
    assert record.data == gone
    assert f"/containers/{'f' * 64}/json" in engine.gets


def test_a_dropped_stream_resumes_from_the_last_event_without_duplicates(
        engine: Engine, tmp_path: Path, samples: list[bytes]) -> None:
    engine.drop_after = 5
    source = start(engine, tmp_path)
    engine.publish(*samples)
    records = collect(source, 9)
    time.sleep(0.1)
    records += collect(source, 1, timeout=0.3)          # nothing more may come
    assert len(actions(records)) == 9 and len({r.origin for r in records}) == 9
    assert engine.queries[1]["since"] == ["1461943101.607533796"]    # the 5th event (start)


def test_a_restart_resumes_after_the_last_committed_event(
        engine: Engine, tmp_path: Path, samples: list[bytes]) -> None:
    first = start(engine, tmp_path)
    engine.publish(*samples[:4])
    assert actions(collect(first, 4)) == ["pull", "create", "attach", "connect"]
    first.close()
    engine.publish(*samples[4:])                         # while ctrail is down
    second = start(engine, tmp_path)
    assert engine.queries[-1]["since"] == ["1461943101.394865557"]
    assert actions(collect(second, 5)) == ["start", "resize", "die", "disconnect", "destroy"]
    assert collect(second, 1, timeout=0.3) == []


def test_filters_are_passed_to_the_daemon(engine: Engine, tmp_path: Path,
                                          samples: list[bytes]) -> None:
    source = start(engine, tmp_path, filters={"type": ["network"]})
    engine.publish(*samples)
    assert actions(collect(source, 2)) == ["connect", "disconnect"]
    assert orjson.loads(engine.queries[0]["filters"][0]) == {"type": ["network"]}
