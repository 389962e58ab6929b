"""The ops server (/healthz, /readyz, /metrics) against strangers, on raw sockets (issue 14, "ways
in"): header and request deadlines that a byte-at-a-time client cannot stretch, a connection cap
per address so that one address cannot lock out the probes of another, bounded headers read
before anything else, TLS, and a warning when it is served in the clear beyond this host or to
anyone. It was a bare ThreadingHTTPServer: a thread per half-open request for as long as the
client kept dripping, no cap, 100 header lines of 64 KiB each."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from ctrail.runtime.ops import OpsConfig, OpsServer
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import EnvRef
from tests.unit.collector.test_http_framing_and_floods import exchange, status_of
from tests.unit.collector.test_http_listener import Pki, client_tls, pki as pki  # noqa: F401
from tests.waiting import wait_for

TOKEN = "ops-flood-token"
PROBE = b"GET /readyz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + \
    b"\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPS_FLOOD_TOKEN", TOKEN)


def serve(**changes: Any) -> OpsServer:
    config = OpsConfig(**{"port": 0, "token": EnvRef(env="TEST_OPS_FLOOD_TOKEN"), **changes})
    return config.build(Telemetry(), lambda: True)


@pytest.fixture
def ops(request: pytest.FixtureRequest) -> Iterator[OpsServer]:
    server = serve(**getattr(request, "param", {}))
    yield server
    server.close()


def ops_threads() -> int:
    """Threads serving ops connections (the stdlib names them Thread-N (process_request_thread))."""
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


@pytest.mark.parametrize("ops", [{"header_timeout_secs": 1.0, "read_timeout_secs": 5.0}],
                         indirect=True)
def test_a_client_dripping_its_headers_is_closed_at_the_header_deadline(ops: OpsServer) -> None:
    """A byte every 0.2 s never trips the per-read timeout (5 s); the header deadline (1 s)
    closes the connection anyway, and its thread ends with it."""
    before = ops_threads()
    drippers = [socket.create_connection(("127.0.0.1", ops.port), timeout=5) for _ in range(6)]
    closed_after: list[float] = []

    def drip(sock: socket.socket) -> None:
        started = time.monotonic()
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            for byte in b"X-Slow: " + b"y" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:                          # the server shut the connection
            pass
        closed_after.append(time.monotonic() - started)

    threads = [threading.Thread(target=drip, args=(sock,)) for sock in drippers]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: ops_threads() >= before + 6, timeout=5)
        for thread in threads:
            thread.join(timeout=15)
        assert len(closed_after) == 6 and max(closed_after) < 4, closed_after   # not 20 s
        wait_for(lambda: ops_threads() == before, timeout=3)      # no thread held past it
        assert status_of(exchange(ops.port, PROBE)) == 200        # and the probe answers
    finally:
        for sock in drippers:
            sock.close()


@pytest.mark.parametrize("ops", [{"header_timeout_secs": 1.0}], indirect=True)
def test_idle_sockets_from_one_address_do_not_lock_out_a_probe_from_another(
        ops: OpsServer) -> None:
    """64 sockets from one address connect and say nothing: it gets 8 (the rest are answered
    429 from the accept loop, without a thread), a probe from another address is answered
    at once, and the 8 are closed at the header deadline."""
    idle = [socket.create_connection(("127.0.0.1", ops.port), timeout=5) for _ in range(64)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert status_of(exchange(ops.port, PROBE, source="127.0.0.2")) == 200
        assert time.monotonic() - started < 0.5                   # served now, not after 1 s
        refused = 0
        for sock in idle[8:]:
            sock.settimeout(5)
            refused += sock.recv(4096).startswith(b"HTTP/1.1 429 ")
        assert refused == 56
        for sock in idle[:8]:
            sock.settimeout(5)
            assert sock.recv(4096) == b""                         # closed at the deadline
        wait_for(lambda: status_of(exchange(ops.port, PROBE)) == 200, timeout=3)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("ops", [{"max_connections": 4, "max_connections_per_client": 4}],
                         indirect=True)
def test_past_max_connections_strangers_get_503_and_the_server_recovers(ops: OpsServer) -> None:
    held = [socket.create_connection(("127.0.0.1", ops.port), source_address=(f"127.0.1.{i}", 0),
                                     timeout=5) for i in range(4)]
    try:
        time.sleep(0.2)
        answer = exchange(ops.port, PROBE, source="127.0.0.9")
        assert status_of(answer) == 503 and b"Retry-After: 1\r\n" in answer
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: status_of(exchange(ops.port, PROBE, source="127.0.0.9")) == 200, timeout=3)


def test_headers_are_bounded_and_checked_before_the_token_is_looked_at(ops: OpsServer) -> None:
    """The stdlib alone reads 100 header lines of 64 KiB each, from anyone."""
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 60000 + b"\r\n" * 2
    assert status_of(exchange(ops.port, big)) == 431
    many = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 90 + b"\r\n"
    assert status_of(exchange(ops.port, many)) == 431
    assert status_of(exchange(ops.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")) == 414
    nobody = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert status_of(exchange(ops.port, nobody)) == 401
    # A body on a GET is refused and closed, never read as the next request on the connection.
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + \
        b"\r\nContent-Length: 37\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(ops.port, smuggled)
    assert status_of(answer) == 400 and answer.count(b"HTTP/1.1 ") == 1
    assert status_of(exchange(ops.port, PROBE.replace(b"GET", b"POST", 1))) == 405
    # Two words on the request line: the stdlib took it for HTTP/0.9, parsed the headers all the
    # same and answered a bare body (found by tests/unit/ctrail/test_ops_fuzz.py).
    old_style = exchange(ops.port, b"GET HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
                         b"\r\n\r\n")
    assert b"Error code: 505" in old_style and b"not found" not in old_style


@pytest.mark.parametrize("ops", [{"max_requests_per_client_per_sec": 2,
                                  "max_request_burst_per_client": 3}], indirect=True)
def test_a_request_flood_from_one_address_gets_429(ops: OpsServer) -> None:
    answers = [status_of(exchange(ops.port, PROBE)) for _ in range(5)]
    assert answers[:3] == [200, 200, 200] and set(answers[3:]) == {429}
    assert status_of(exchange(ops.port, PROBE, source="127.0.0.2")) == 200


def test_ops_over_tls_and_the_health_probe_uses_it(pki: Pki, tmp_path: Path,  # noqa: F811
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ctrail.cli.main import main

    server = serve(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    try:
        response = httpx.get(f"https://127.0.0.1:{server.port}/healthz", verify=client_tls(pki),
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert (response.status_code, response.text) == (200, "ok\n")
        assert exchange(server.port, PROBE) == b""           # plain HTTP: no answer
        config = tmp_path / "c.yaml"
        config.write_text(f"data_dir: {tmp_path}\nops: {{host: 0.0.0.0, port: {server.port}, "
                          f"token: {{env: TEST_OPS_FLOOD_TOKEN}}, "
                          f"tls_cert_file: {pki.server_cert}, tls_key_file: {pki.server_key}}}\n")
        assert main(["health", "--endpoint", "readyz", "--config", str(config)]) == 0
        assert capsys.readouterr().out.strip() == "healthy: /readyz answered 200"
    finally:
        server.close()


def test_plain_http_beyond_this_host_and_no_authentication_are_warned_about(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    def warnings_of(**changes: Any) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ctrail.runtime.http.config"):
            serve(**changes).close()
        return [r.getMessage() for r in caplog.records if getattr(r, "section", "") == "ops"]

    assert warnings_of() == []                                  # loopback, with a token
    [plain] = warnings_of(host="0.0.0.0")
    assert "without TLS beyond this host" in plain
    assert warnings_of(host="0.0.0.0", tls_cert_file=pki.server_cert,
                       tls_key_file=pki.server_key) == []
    [anyone] = warnings_of(token=None, allow_unauthenticated=True)
    assert "without authentication" in anyone
