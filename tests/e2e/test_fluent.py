"""`ctrail run` with a Fluent forward input, as a user runs it: Fluent Bit-shaped frames (built
per the spec: handshake, CompressedPackedForward, acks) and fluent-logger's FluentSender in;
`ctrail search` finds the events; a bad frame is in `ctrail dlq list`; an acked chunk survives
kill -9; and the Fluentd output sends what was stored on to another forward receiver."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from fluent.sender import EventTime, FluentSender

from collector.sources.fluent_forward import FluentForwardConfig, ForwardSource

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
CID = "0f3c9a1d7b2e4c6a8d0f1e3b5a7c9d2e4f6a8b0c1d3e5f7a9b2c4d6e8f0a1b3c"
KEY = "e2e-shared-key"
sys.path.insert(0, str(Path(__file__).parent))
from test_run import free_port  # noqa: E402
from tests.waiting import wait_for  # noqa: E402


def search_count(exe: Path, data_dir: Path, query: str) -> int:
    done = subprocess.run([str(exe), "search", query, "--limit", "10000", "--data-dir",
                           str(data_dir), "--format", "json"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def tag(pod: str) -> str:
    return f"kube.var.log.containers.{pod}_payments_api-{CID}.log"


def packed_chunk(pod: str, count: int, chunk: str) -> bytes:
    entries = b"".join(msgpack.packb([EventTime(1777593600 + n, 0), {
        "log": f"2026-05-01T00:00:{n % 60:02d}.000000001Z stdout F {pod} request {n}"}])
        for n in range(count))
    return msgpack.packb([tag(pod), gzip.compress(entries),
                          {"chunk": chunk, "size": count, "compressed": "gzip"}],
                         use_bin_type=True)


def receive(sock: socket.socket) -> Any:
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        unpacker.feed(data)
        for obj in unpacker:
            return obj


def authenticated(port: int, key: str = KEY) -> tuple[socket.socket, Any]:
    """Connect and run the spec's handshake; the socket and the PONG."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    helo = receive(sock)
    nonce = helo[1]["nonce"]
    digest = hashlib.sha512(b"salt" + b"e2e-client" + nonce + key.encode()).hexdigest()
    sock.sendall(msgpack.packb(["PING", "e2e-client", b"salt", digest, "", ""],
                               use_bin_type=True))
    return sock, receive(sock)


def start(config: Path, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TEST_FORWARD_KEY": KEY}
    return subprocess.Popen([str(EXE), "run", "--config", str(config), "--data-dir",
                             str(data_dir)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ForwardSource]:
    source = FluentForwardConfig(port=0, parser="falco", allow_unauthenticated=True).build(
        "fluentd", tmp_path, 1024 * 1024)
    yield source
    source.close()


def test_forwarded_container_logs_are_searchable_and_forwarded_on(tmp_path: Path,
                                                                 receiver) -> None:
    secure, plain, data_dir = free_port(), free_port(), tmp_path / "data"
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  fluent-bit: {{type: fluent_forward, port: {secure}, shared_key: {{env: TEST_FORWARD_KEY}}}}
  apps: {{type: fluent_forward, port: {plain}, allow_unauthenticated: true}}
outputs:
  siem: {{type: fluentd, port: {receiver.port}, tag_prefix: ct}}
""")
    proc = start(config, data_dir)
    try:
        wait_for(lambda: port_open(secure) and port_open(plain))
        sock, pong = authenticated(secure, "wrong-key")
        assert pong == ["PONG", False, "shared_key mismatch", "", ""]
        sock.close()
        sock, pong = authenticated(secure)
        assert pong[1] is True
        sock.sendall(packed_chunk("checkout-5d8f", 100, "chunk-1"))
        assert receive(sock) == {"ack": "chunk-1"}
        sock.sendall(msgpack.packb([tag("checkout-5d8f"), [[1, "not a record"]]]))
        assert sock.recv(100) == b""                           # closed after the bad frame
        sock.close()
        sender = FluentSender("kube", port=plain)
        for n in range(3):
            assert sender.emit(tag("billing-77").removeprefix("kube."), {
                "log": f"2026-05-01T00:01:0{n}.5Z stderr F billing error {n}"})
        sender.close()
        wait_for(lambda: search_count(EXE, data_dir, "kubernetes.pod.name:checkout-5d8f") == 100)
        wait_for(lambda: search_count(EXE, data_dir,
                                      "kubernetes.pod.name:billing-77 AND stream:stderr") == 3)
        dlq = subprocess.run([str(EXE), "dlq", "list", "--data-dir", str(data_dir), "--format",
                              "json"], capture_output=True, text=True, cwd=REPO)
        (dead,) = [orjson.loads(line) for line in dlq.stdout.splitlines()]
        assert dead["reason"] == "undecodable"
        assert dead["origin"] == f"fluent_forward fluent-bit 127.0.0.1 tag={tag('checkout-5d8f')}"
        forwarded: list[Any] = []

        def logs(docs: list[Any]) -> list[Any]:      # not our own audit trail's events
            return [d for d in docs if d["event"]["dataset"] != "containertrail.audit"]

        def forwarded_all() -> bool:
            records = receiver.read(1000)
            receiver.commit(records)
            forwarded.extend(orjson.loads(r.data) for r in records)
            return len(logs(forwarded)) >= 103
        wait_for(forwarded_all)
        assert {d["kubernetes"]["pod"]["name"] for d in logs(forwarded)} \
            == {"checkout-5d8f", "billing-77"}
        # The first start's rule set, recorded before any log, is forwarded like them.
        assert forwarded[0]["event"]["action"] == "rules-change"
    finally:
        err = stop(proc)
    assert KEY not in err


def test_an_acked_chunk_survives_kill_9_right_after_the_ack(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  fluent-bit: {{type: fluent_forward, port: {port}, shared_key: {{env: TEST_FORWARD_KEY}}}}
""")
    proc = start(config, data_dir)
    try:
        wait_for(lambda: port_open(port))
        sock, _pong = authenticated(port)
        sock.sendall(packed_chunk("ledger-0", 500, "durable-1"))
        assert receive(sock) == {"ack": "durable-1"}
        proc.kill()                                             # SIGKILL: no shutdown at all
        proc.wait(timeout=30)
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    proc = start(config, data_dir)
    try:
        wait_for(lambda: search_count(EXE, data_dir, "kubernetes.pod.name:ledger-0") == 500, 60)
    finally:
        stop(proc)
