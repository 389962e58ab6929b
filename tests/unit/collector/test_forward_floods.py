"""The forward input against clients that never authenticate (issue 14): an idle stranger holds
a connection only handshake_timeout_secs, one address gets max_connections_per_client, and a
large frame before the handshake is refused, not read to 16 MiB and dead-lettered."""

from __future__ import annotations

import socket
import time

import msgpack
import pytest

from ctrail.bus import DLQ, RAW
from test_fluent_forward import (
    KEY,
    _close_sockets as _close_sockets,  # noqa: F401 (autouse)
    closed_by_peer,
    connect,
    handshake,
    harness as harness,  # noqa: F401 (fixture)
    receive,
)


@pytest.fixture
def keyed(harness, monkeypatch):  # type: ignore[no-untyped-def]  # noqa: F811
    monkeypatch.setenv("FWD_KEY", KEY)
    return lambda **config: harness(allow_unauthenticated=False, shared_key={"env": "FWD_KEY"},
                                    **config)


def test_idle_strangers_are_dropped_at_the_handshake_deadline(keyed) -> None:  # type: ignore[no-untyped-def]
    h = keyed(handshake_timeout_secs=0.5, max_connections=8, max_connections_per_client=64)
    idle = [connect(h.source.port) for _ in range(8)]          # every slot, no handshake
    started = time.monotonic()
    assert all(closed_by_peer(sock) for sock in idle)
    assert time.monotonic() - started < 5                       # not idle_timeout_secs (300)
    sock = connect(h.source.port)                               # a real client gets in
    assert handshake(sock, KEY)[1] is True


def test_one_address_gets_max_connections_per_client(keyed) -> None:  # type: ignore[no-untyped-def]
    h = keyed(max_connections=64, max_connections_per_client=4)
    held = [connect(h.source.port) for _ in range(4)]
    for sock in held:
        assert receive(sock)[0] == "HELO"
    extra = connect(h.source.port)
    assert closed_by_peer(extra, timeout=2)
    other = socket.create_connection(("127.0.0.1", h.source.port), timeout=5,
                                     source_address=("127.0.0.2", 0))
    try:
        assert handshake(other, KEY)[1] is True                 # another address is served
    finally:
        other.close()


def test_a_large_frame_before_the_handshake_is_refused_and_not_kept(keyed) -> None:  # type: ignore[no-untyped-def]
    h = keyed()
    sock = connect(h.source.port)
    assert receive(sock)[0] == "HELO"
    big = msgpack.packb(["PING", "x" * (1024 * 1024)], use_bin_type=True)
    started = time.monotonic()
    try:
        sock.sendall(big)
    except (BrokenPipeError, ConnectionResetError):
        pass                                                    # cut off while sending: good
    assert closed_by_peer(sock)
    assert time.monotonic() - started < 5
    assert h.items(DLQ, 1, timeout=1.0) == [] and h.items(RAW, 1, timeout=0.2) == []
