"""The Fluent forward input: every carrier mode, acks only once durable, the shared-key handshake,
dead letters for bad frames, bounded connections. Clients are fluent-logger's FluentSender (the
real Python client: Message mode, no acks, no handshake) and frames built here with msgpack
straight from the Forward Protocol v1 spec for everything fluent-logger cannot send."""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fluent.sender import EventTime, FluentSender

from collector import PARSERS
from collector.sources.fluent_forward import FluentForwardConfig
from collector.sources.forward_records import container_line, entry_record, tag_path
from ctrail.bus import DLQ, RAW
from ctrail.bus.codec import RawEntry
from ctrail.errors import ConfigError
from ctrail.event import Event, Rejection
from ctrail.runtime.chain import parse_entry
from ctrail.runtime.pipeline import Pipeline
from ctrail.settings import Settings

CID = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16"
TAG = f"kube.var.log.containers.web-7d4b9_shop_nginx-{CID}.log"
KEY = "forward-secret-1"


def cri(n: int, text: str = "hello") -> str:
    return f"2026-05-01T00:00:{n % 60:02d}.123456789Z stdout F {text} {n}"


def entry(n: int, text: str = "hello") -> list[Any]:
    return [EventTime(1777593600 + n, 5), {"log": cri(n, text)}]


class Harness:
    """A forward source behind the real collect path (Pipeline.collector over a local bus)."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.pipeline = Pipeline(Settings(data_dir=tmp_path), stages=())
        self.config = FluentForwardConfig(port=0, **config)
        self.source = self.config.build("fwd", tmp_path, 1024 * 1024)
        self.collector = self.pipeline.collector("fwd", self.source, self.config.parser)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                self.collector.run_once()
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.source.close()
        self.pipeline.close()

    def items(self, topic: str, want: int, timeout: float = 10.0) -> list[Any]:
        """RAW: the events the chain makes of what intake appended; DLQ: the dead letters
        (intake's own travel on ctrail.raw too)."""
        parser = PARSERS[self.config.parser]()
        consumers = {RAW: self.pipeline.bus.consumer(f"test-{topic}", (RAW,))}
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            for record in consumers[RAW].poll(1000, timeout_secs=0.1):
                parsed = parse_entry(RawEntry.decode(record.value), lambda _format: parser)
                for item in [parsed] if isinstance(parsed, Rejection) else parsed:
                    if isinstance(item, Rejection) == (topic == DLQ):
                        got.append(item)
        for consumer in consumers.values():
            consumer.close()
        return got


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(start: bool = True, **config: Any) -> Harness:
        config.setdefault("allow_unauthenticated", True)
        made.append(Harness(tmp_path / str(len(made)), **config))
        if start:
            made[-1].start()
        return made[-1]
    yield make
    for one in made:
        one.close()


_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _sockets:
        _sockets.pop().close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    _sockets.append(sock)
    return sock


def receive(sock: socket.socket, timeout: float = 5.0) -> Any:
    sock.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        unpacker.feed(data)
        for obj in unpacker:
            return obj


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True


def handshake(sock: socket.socket, key: str, username: str = "", password: str = "") -> Any:
    """PING per the spec: sha512 hex of salt+hostname+nonce+key; password digest with auth salt."""
    helo = receive(sock)
    assert helo[0] == "HELO"
    nonce, auth = helo[1]["nonce"], helo[1]["auth"]
    salt = b"client-salt-0123"
    digest = hashlib.sha512(salt + b"client-host" + nonce + key.encode()).hexdigest()
    pw = (hashlib.sha512(auth + username.encode() + password.encode()).hexdigest()
          if username else "")
    sock.sendall(msgpack.packb(["PING", "client-host", salt, digest, username, pw],
                               use_bin_type=True))
    pong = receive(sock)
    if pong[1]:
        proof = hashlib.sha512(salt + pong[3].encode() + nonce + key.encode()).hexdigest()
        assert pong[4] == proof, "the server must prove it knows the key"
    return pong


def test_fluent_logger_messages_become_container_log_events_with_pod_fields(harness) -> None:
    h = harness()
    sender = FluentSender("kube", port=h.source.port, nanosecond_precision=True)
    label = TAG.removeprefix("kube.")
    for n in range(3):
        assert sender.emit(label, {"log": cri(n), "stream": "stdout"}), sender.last_error
    sender.emit(label, {"log": "plain text without the runtime's prefix", "stream": "stderr"})
    sender.close()
    events = h.items(RAW, 4)
    assert [e.message for e in events] == ["hello 0", "hello 1", "hello 2",
                                          "plain text without the runtime's prefix\n"[:-1]]
    first = events[0]
    assert (first.kubernetes.namespace, first.kubernetes.pod.name,
            first.kubernetes.container.name, first.container.id) == ("shop", "web-7d4b9",
                                                                     "nginx", CID)
    assert events[3].stream == "stderr"


def test_forward_mode_chunk_is_acked_only_after_commit(harness) -> None:
    h = harness(start=False)
    sock = connect(h.source.port)
    sock.sendall(msgpack.packb([TAG, [entry(1), entry(2)], {"chunk": "c-1"}], use_bin_type=True))
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(100)                          # nothing durable yet: no ack
    records = []
    while len(records) < 2:
        records += h.source.read(10)
    with pytest.raises(TimeoutError):
        sock.recv(100)                          # read but not committed: still no ack
    h.source.commit(records[:1])
    with pytest.raises(TimeoutError):
        sock.recv(100)                          # half committed: still no ack
    h.source.commit(records[1:])
    assert receive(sock) == {"ack": "c-1"}
    sock.close()


@pytest.mark.parametrize("compressed", [False, True])
def test_packed_forward_entries_are_all_published_and_acked(harness, compressed: bool) -> None:
    h = harness()
    packed = b"".join(msgpack.packb(entry(n), use_bin_type=True) for n in range(100))
    options: dict[str, Any] = {"chunk": "p-1", "size": 100}
    if compressed:                              # two gzip members, as Fluentd appends them
        packed = gzip.compress(packed[:500]) + gzip.compress(packed[500:])
        options["compressed"] = "gzip"
    sock = connect(h.source.port)
    sock.sendall(msgpack.packb([TAG, packed, options], use_bin_type=True))
    assert receive(sock) == {"ack": "p-1"}
    events = h.items(RAW, 100)
    assert sorted(e.message for e in events) == sorted(f"hello {n}" for n in range(100))
    sock.close()


def test_message_mode_with_integer_time_and_several_messages_on_one_connection(harness) -> None:
    h = harness()
    sock = connect(h.source.port)
    frames = b"".join(msgpack.packb([TAG, 1777593600, {"log": cri(n)}, {"chunk": f"m{n}"}])
                      for n in range(3))
    sock.sendall(frames)
    assert [receive(sock) for _ in range(3)] == [{"ack": f"m{n}"} for n in range(3)]
    assert len(h.items(RAW, 3)) == 3
    sock.close()


def test_the_handshake_accepts_the_shared_key_and_users(harness, monkeypatch) -> None:
    monkeypatch.setenv("FWD_KEY", KEY)
    monkeypatch.setenv("FWD_PW", "pw-1")
    h = harness(allow_unauthenticated=False, shared_key={"env": "FWD_KEY"},
                users={"alice": {"env": "FWD_PW"}}, self_hostname="ctrail-test")
    sock = connect(h.source.port)
    assert handshake(sock, KEY, "alice", "pw-1")[:4] == ["PONG", True, "", "ctrail-test"]
    sock.sendall(msgpack.packb([TAG, [entry(1)], {"chunk": "h-1"}]))
    assert receive(sock) == {"ack": "h-1"}
    sock.close()
    sock = connect(h.source.port)
    assert handshake(sock, KEY, "alice", "wrong") == ["PONG", False,
                                                      "username/password mismatch", "", ""]
    assert closed_by_peer(sock)


def test_a_wrong_shared_key_gets_the_pong_failure_and_the_connection_closed(harness,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("FWD_KEY", KEY)
    h = harness(allow_unauthenticated=False, shared_key={"env": "FWD_KEY"})
    sock = connect(h.source.port)
    assert handshake(sock, "not-the-key") == ["PONG", False, "shared_key mismatch", "", ""]
    assert closed_by_peer(sock)
    # fluent-logger cannot do the handshake: its message is refused, nothing is published.
    sender = FluentSender("kube", port=h.source.port)
    sender.emit("x", {"log": cri(1)})
    sender.close()
    assert h.items(RAW, 1, timeout=1.0) == []


def test_the_handshake_is_required_unless_explicitly_disabled(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a shared_key"):
        FluentForwardConfig(port=0).build("fwd", tmp_path, 1024)
    config = FluentForwardConfig(port=0, shared_key={"file": tmp_path / "key"})
    (tmp_path / "key").write_text(KEY + "\n")
    source = config.build("fwd", tmp_path, 1024)
    try:
        assert source.shared_key == KEY and KEY not in repr(config)
    finally:
        source.close()


def test_not_msgpack_is_dead_lettered_with_its_peer_and_the_connection_closed(harness) -> None:
    h = harness()
    sock = connect(h.source.port)
    sock.sendall(b"\xc1 definitely not msgpack")
    assert closed_by_peer(sock)
    (dead,) = h.items(DLQ, 1)
    assert isinstance(dead, Rejection)
    assert dead.reason == "undecodable" and "not msgpack" in dead.detail
    assert dead.origin == "fluent_forward fwd 127.0.0.1 tag=-"
    # The listener lives on: the next client is served.
    sender = FluentSender("kube", port=h.source.port)
    assert sender.emit(TAG.removeprefix("kube."), {"log": cri(9)})
    sender.close()
    assert [e.message for e in h.items(RAW, 1)] == ["hello 9"]


@pytest.mark.parametrize("frame, detail", [
    ([TAG, [[1, "a string, not a map"]]], "not a map"),
    ([TAG, b"\x92\x01", {"chunk": "x"}], "middle of an entry"),
    ([TAG, b"not gzip", {"compressed": "gzip"}], "gzip"),
    ([TAG, [[True, {"log": "x"}]]], "entry time"),
])
def test_a_broken_frame_is_dead_lettered_with_its_tag_and_never_acked(harness, frame,
                                                                      detail: str) -> None:
    h = harness()
    sock = connect(h.source.port)
    raw = msgpack.packb(frame, use_bin_type=True)
    sock.sendall(raw)
    assert closed_by_peer(sock)
    (dead,) = h.items(DLQ, 1)
    assert (dead.reason, dead.origin) == ("undecodable", f"fluent_forward fwd 127.0.0.1 tag={TAG}")
    assert detail in dead.detail
    assert dead.original_encoding == "base64" or dead.original.encode() == raw


def test_an_oversize_frame_closes_the_connection_and_keeps_its_start(harness) -> None:
    h = harness(max_message_bytes=64 * 1024)
    sock = connect(h.source.port)
    try:
        sock.sendall(msgpack.packb([TAG, 1, {"log": "x" * 200_000}]))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_peer(sock)
    (dead,) = h.items(DLQ, 1)
    assert dead.reason == "record_too_large" and "max_message_bytes" in dead.detail


def test_a_gzip_bomb_is_refused_past_max_decompressed_bytes(harness) -> None:
    h = harness(max_decompressed_bytes=1024 * 1024)
    bomb = gzip.compress(b"\x00" * (4 * 1024 * 1024))
    sock = connect(h.source.port)
    sock.sendall(msgpack.packb([TAG, bomb, {"compressed": "gzip"}], use_bin_type=True))
    assert closed_by_peer(sock)
    assert h.items(DLQ, 1)[0].reason == "record_too_large"


def test_a_slow_client_and_an_idle_client_are_disconnected(harness) -> None:
    h = harness(message_timeout_secs=0.5, idle_timeout_secs=0.5)
    slow = connect(h.source.port)
    slow.sendall(msgpack.packb([TAG, [entry(1)]])[:10])     # a frame started, never finished
    idle = connect(h.source.port)
    started = time.monotonic()
    assert closed_by_peer(slow) and closed_by_peer(idle)
    assert time.monotonic() - started < 3
    assert h.items(DLQ, 1, timeout=0.5) == [] and h.items(RAW, 1, timeout=0.1) == []


def test_connections_beyond_the_limit_are_refused(harness) -> None:
    h = harness(max_connections=1)
    first = connect(h.source.port)
    time.sleep(0.2)
    second = connect(h.source.port)
    assert closed_by_peer(second, timeout=2)
    first.sendall(msgpack.packb([TAG, [entry(1)], {"chunk": "ok"}]))
    assert receive(first) == {"ack": "ok"}
    first.close()


def test_tags_of_tailed_kubelet_and_docker_files_map_back_to_their_paths() -> None:
    uid = "e9f2963f-55f2-11e9-84c5-02e422b8a84a"
    assert tag_path(TAG) == f"/var/log/containers/web-7d4b9_shop_nginx-{CID}.log"
    assert tag_path(f"pods.var.log.pods.core_base_{uid}.fluent-bit.0.log") == \
        f"/var/log/pods/core_base_{uid}/fluent-bit/0.log"
    assert tag_path(f"docker.var.lib.docker.containers.{CID}.{CID}-json.log") == \
        f"/var/lib/docker/containers/{CID}/{CID}-json.log"
    assert tag_path("app.nginx") is None


def test_fluent_bit_cri_and_docker_parser_records_rebuild_the_runtime_line() -> None:
    # Fluent Bit's `cri` parser: time, stream, logtag, message.
    line = container_line({"time": "2019-05-07T18:57:50.904275087+00:00", "stream": "stdout",
                           "logtag": "P", "message": "1a. some "}, 0)
    assert line == (b'{"log":"1a. some ","stream":"stdout",'
                    b'"time":"2019-05-07T18:57:50.904275087+00:00"}')
    # Its `docker` parser keeps log with its newline; the time went to the entry's time.
    assert container_line({"log": "hi\n", "stream": "stderr"}, 1_500_000_000_000_000_001) == \
        b'{"log":"hi\\n","stream":"stderr","time":"2017-07-14T02:40:00.000000001Z"}'


def test_real_fluent_bit_test_lines_parse_from_forward_records(real_data: Path) -> None:
    parser = PARSERS["container-log"]()
    now = datetime.now(timezone.utc)
    samples = real_data / "fluentbit-k8s-container-logs"
    lines = (samples / "cri_multiline_input.log").read_text().splitlines()
    json_lines = next((samples / "kubernetes" / "log").rglob("*.log")).read_text().splitlines()
    for text in [*lines, *json_lines]:
        record = entry_record("fwd", TAG, 0, {"log": text}, "container-log", None, now)
        (event,) = parser.parse(record)
        assert event.kubernetes.pod.name == "web-7d4b9"
        assert event.event.original == text


def test_audit_and_falco_records_hand_their_json_to_the_parser(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    audit = ('{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","verb":"get",'
             '"stage":"ResponseComplete","requestReceivedTimestamp":"2026-05-01T00:00:00Z",'
             '"user":{"username":"bob"}}')
    as_log = entry_record("fwd", "audit", 0, {"log": audit + "\n"}, "k8s-audit", None, now)
    assert as_log.data == audit.encode() and as_log.origin == "fluent_forward fwd tag=audit"
    (event,) = PARSERS["k8s-audit"]().parse(as_log)
    assert event.user.name == "bob"
    falco = {"output": "x", "priority": "Warning", "rule": "r", "time": "2026-05-01T00:00:00Z",
             "output_fields": {"k": b"bytes"}}
    as_record = entry_record("fwd", "falco", 0, falco, "falco", None, now)
    assert b'"k":"bytes"' in as_record.data


def test_one_bad_record_in_a_message_is_dead_lettered_and_the_rest_published(harness) -> None:
    h = harness()
    sock = connect(h.source.port)
    sock.sendall(msgpack.packb([TAG, [entry(1), [1, {"no_log": 1}], entry(2)], {"chunk": "b"}]))
    assert receive(sock) == {"ack": "b"}
    assert len(h.items(RAW, 2)) == 2
    (dead,) = h.items(DLQ, 1)
    assert dead.origin.startswith("/var/log/containers/web-7d4b9_shop_nginx")
    assert isinstance(h.items(RAW, 2)[0], Event)
    sock.close()


def test_an_entry_past_year_9999_is_dead_lettered_and_the_chunk_acked(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness()
    sock = connect(h.source.port)
    frame = ["kube.var.log.containers.web_shop_nginx-1.log",
             [[1_700_000_000, {"log": "fine", "stream": "stdout"}],
              [253402300800, {"log": "from the year 10000", "stream": "stdout"}]],
             {"chunk": "c-9999"}]
    sock.sendall(msgpack.packb(frame, use_bin_type=True))
    assert receive(sock) == {"ack": "c-9999"}              # not retried forever
    assert len(h.items(RAW, 1)) == 1
    [dead] = h.items(DLQ, 1)
    assert dead.reason == "invalid_timestamp" and "253402300800" in dead.detail
