"""The webhook listener under hostile framing and floods, on raw sockets (issue 14): one framing
stated once (RFC 9112), bounded headers, deadlines for slow clients, and per-client connection
and request-rate limits, so that one address cannot lock out the others."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.unit.collector.test_http_listener import (
    EVENT_LIST,
    TOKEN,
    _token as _token,  # noqa: F401 (autouse)
    k8s,
    running,
)
from tests.waiting import wait_for

AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"


def exchange(port: int, request: bytes, source: str = "127.0.0.1",
             timeout: float = 10) -> bytes:
    """Send `request` from `source`, return all the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass                                    # refused before all was sent
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def request(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + headers + b"Connection: close\r\n\r\n" + body


def chunked(size_line: bytes, data: bytes) -> bytes:
    return request(b"Transfer-Encoding: chunked\r\n", size_line + data + b"\r\n0\r\n\r\n")


N = len(EVENT_LIST)


@pytest.mark.parametrize("raw, status", [
    (request(b"Content-Length: %d\r\nContent-Length: %d\r\n" % (N, N), EVENT_LIST), 400),
    (request(b"Content-Length: %d\r\nContent-Length: 5\r\n" % N, EVENT_LIST), 400),
    (request(b"Content-Length: %d, %d\r\n" % (N, N), EVENT_LIST), 400),
    (request(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % N, EVENT_LIST), 400),
    (request(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
             b"%x\r\n%s\r\n0\r\n\r\n" % (N, EVENT_LIST)), 400),
    (request(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 400),
    (request(b"Content-Length: +%d\r\n" % N, EVENT_LIST), 400),
    (request(b"Content-Length: 0x%x\r\n" % N, EVENT_LIST), 400),
    (request(b"Content-Length: 1_0\r\n", EVENT_LIST[:10]), 400),
    (request(b"Content-Length: \xb2\r\n", b"{}"), 400),            # '2' superscript: isdigit()
    (request(b"Content-Length: 99999999999999999999999\r\n", b"{}"), 400),
    (chunked(b"0x%x\r\n" % N, EVENT_LIST), 400),
    (chunked(b" %x \r\n" % N, EVENT_LIST), 400),
    (chunked(b"%x \r\n" % N, EVENT_LIST), 400),
    (chunked(b"+%x\r\n" % N, EVENT_LIST), 400),
    (chunked(b"%s\r\n" % "_".join(f"{N:x}").encode(), EVENT_LIST), 400),
    (chunked(b"%x\n" % N, EVENT_LIST), 400),                     # a bare LF
    (chunked(b"f" * 40 + b"\r\n", EVENT_LIST), 413),
    (chunked(b"0" * 30 + b"%x\r\n" % N, EVENT_LIST), 200),       # leading zeros are HEXDIGs
    (chunked(b"%x ;ext=1\r\n" % N, EVENT_LIST), 200),            # BWS before an extension
])
def test_framing_is_stated_once_and_exactly(tmp_path: Path, raw: bytes, status: int) -> None:
    with running(k8s(), tmp_path) as run:
        assert status_of(exchange(run.listener.port, raw)) == status
        assert run.accepted() == (2 if status == 200 else 0)


def test_header_sections_beyond_the_limits_get_431_and_long_request_lines_414(
        tmp_path: Path) -> None:
    with running(k8s(max_headers=20, max_header_bytes=4096), tmp_path) as run:
        many = b"".join(b"X-Filler-%d: 1\r\n" % i for i in range(30))
        assert status_of(exchange(run.listener.port, request(many))) == 431
        big = b"X-Filler: " + b"a" * 5000 + b"\r\n"
        assert status_of(exchange(run.listener.port, request(big))) == 431
        long_line = b"POST /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert status_of(exchange(run.listener.port, long_line)) == 414
        fits = request(b"Content-Length: %d\r\n" % N + b"X-Filler: 1\r\n" * 10, EVENT_LIST)
        assert status_of(exchange(run.listener.port, fits)) == 200


def test_slow_clients_from_one_address_cannot_lock_out_another(tmp_path: Path) -> None:
    """64 sockets from one address send a request line and stall (slowloris); the
    address gets 16 connections, each closed when its headers are not in after a second, and a
    sender at another address is served at once throughout."""
    config = k8s(header_timeout_secs=1.0, max_connections=64, max_connections_per_client=16)
    with running(config, tmp_path) as run:
        slow: list[socket.socket] = []
        try:
            for _ in range(64):
                sock = socket.create_connection(("127.0.0.1", run.listener.port), timeout=5)
                sock.sendall(b"POST / HTTP/1.1\r\n")
                slow.append(sock)
            time.sleep(0.2)
            started = time.monotonic()
            ok = request(b"Content-Length: %d\r\n" % N, EVENT_LIST)
            assert status_of(exchange(run.listener.port, ok, source="127.0.0.2")) == 200
            assert time.monotonic() - started < 2.0         # served now, not after a deadline
            # One more from the flooding address, while its 16 are held: 429 from the accept loop.
            assert exchange(run.listener.port, b"").startswith(b"HTTP/1.1 429 ")
            deadline = time.monotonic() + 5
            for sock in slow:                           # every one is closed by the deadline
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    while sock.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
            assert time.monotonic() - started < 5           # header_timeout_secs, not 60 s
            # Its slots are free again (each released as its thread ends, just after the close).
            wait_for(lambda: status_of(exchange(run.listener.port, ok)) == 200, timeout=5)
        finally:
            for sock in slow:
                sock.close()


def test_a_request_flood_from_one_address_gets_429_with_retry_after(tmp_path: Path) -> None:
    config = k8s(max_requests_per_client_per_sec=2, max_request_burst_per_client=3)
    with running(config, tmp_path) as run:
        # Unauthenticated requests count too, and are refused before any body is read.
        bad = b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n" \
              b"Content-Length: 16777216\r\n\r\n"
        answers = [exchange(run.listener.port, bad) for _ in range(6)]
        assert [status_of(a) for a in answers[:3]] == [401, 401, 401]
        assert {status_of(a) for a in answers[3:]} == {429}
        assert b"Retry-After: 1\r\n" in answers[3]
        ok = request(b"Content-Length: %d\r\n" % N, EVENT_LIST)
        assert status_of(exchange(run.listener.port, ok, source="127.0.0.2")) == 200
        time.sleep(1.1)                                 # the bucket refills at 2 a second
        assert status_of(exchange(run.listener.port, ok)) == 200
        assert run.accepted() == 4


def test_many_concurrent_senders_within_the_limits_are_all_stored(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        ok = request(b"Content-Length: %d\r\n" % N, EVENT_LIST)
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(
            status_of(exchange(run.listener.port, ok)))) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 16 and run.accepted() == 32
