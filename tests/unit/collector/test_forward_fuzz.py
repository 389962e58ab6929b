"""Fuzz of the forward input on a real socket, from a grammar of Forward Protocol v1 frames
(Hypothesis): the four carrier modes, every kind of time (integer, EventTime, float, negative,
past year 9999, wrong types), records and non-records, options (chunk, compressed, junk), gzip
right and wrong, and byte damage on top.

What must hold for every frame sent with a chunk: the input answers its ack (its entries are on
ctrail.raw) or closes the connection (the frame is dead-lettered), in time, and keeps serving;
it never fails on a frame (a bug would leave the frame neither stored nor dead-lettered)."""

from __future__ import annotations

import gzip
import logging
import os
import socket
import struct
import time
from typing import Any, Final, Iterator

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from ctrail.bus import RAW
from ctrail.bus.codec import DEAD_LETTER_FORMAT, RawEntry
from parser_fuzz import FUZZ
from test_fluent_forward import Harness

FORWARD_FUZZ_EXAMPLES: Final = int(os.environ.get("CTRAIL_LISTENER_FUZZ_EXAMPLES", "100"))
CRI: Final = "2026-12-07T11:00:00.000000000Z stdout F "


def event_time(seconds: int, nanos: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds % 2**32, nanos % 2**32))


times = st.one_of(
    st.integers(0, 2**31), st.builds(event_time, st.integers(0, 2**32 - 1), st.integers(0, 10**9)),
    st.floats(0, 2**33, allow_nan=False), st.sampled_from([
        -1, 253402300800, 2**63 - 1, 2**64 - 1, 1e300, float("nan"), "2026-01-01", None, [], True,
        msgpack.ExtType(0, b"\x00"), msgpack.ExtType(5, b"12345678")]))
records = st.one_of(
    st.builds(lambda text: {"log": CRI + text}, st.text(max_size=80)),
    st.builds(lambda text: {"log": text, "stream": "stdout"}, st.text(max_size=80)),
    st.sampled_from([{}, {"log": None}, {"log": 1}, {1: 2}, {"log": b"\xff\xfe"}, [], "x", 1]),
    st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3))
entries = st.lists(st.tuples(times, records).map(list), max_size=6)


@st.composite
def frames(draw: st.DrawFn, chunk: str) -> bytes:
    tag = draw(st.sampled_from(["kube.var.log.containers.web_shop_nginx-1.log"] * 6 +
                               ["", "x" * 300, b"bytes-tag", 7, None]))
    option: dict[Any, Any] = {"chunk": chunk}
    option.update(draw(st.sampled_from([{}] * 6 + [{"size": 3}, {"compressed": "zstd"},
                                                   {"chunk": 5}, {"x": [1] * 10}])))
    mode = draw(st.sampled_from(["message", "forward", "packed", "compressed"]))
    listed = draw(entries)
    if mode == "message":
        frame: Any = [tag, draw(times), draw(records), option]
    elif mode == "forward":
        frame = [tag, listed, option]
    else:
        packed = b"".join(msgpack.packb(e, use_bin_type=True) for e in listed)
        if mode == "compressed":
            option["compressed"] = "gzip"
            packed = draw(st.sampled_from([gzip.compress(packed)] * 4 + [
                packed, gzip.compress(packed)[:-4], gzip.compress(packed) * 2]))
        frame = [tag, packed, option]
    frame = draw(st.sampled_from([frame] * 8 + [frame[:1], frame + [None], {"tag": frame}]))
    try:
        raw = msgpack.packb(frame, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        raw = msgpack.packb([tag, 0, {}], use_bin_type=True) if isinstance(tag, str) else b"\xc1"
    damage = draw(st.sampled_from(["none"] * 10 + ["truncate", "flip", "insert"]))
    if damage != "none":
        at = draw(st.integers(0, len(raw) - 1))
        raw = (raw[:at] if damage == "truncate" else
               raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
               if damage == "flip" else raw[:at] + draw(st.binary(min_size=1, max_size=8))
               + raw[at:])
    return raw


class Failures(logging.Handler):
    """Errors the input logs: a frame it failed on is neither stored nor dead-lettered."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.getMessage()} {record.exc_info and record.exc_info[1]!r}")


FAILURES: Final = Failures()


@pytest.fixture(scope="module")
def forward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    logging.getLogger("collector").addHandler(FAILURES)
    logging.getLogger("ctrail").addHandler(FAILURES)
    harness = Harness(tmp_path_factory.mktemp("forward-fuzz"), allow_unauthenticated=True,
                      max_connections_per_client=256, ack_timeout_secs=5,
                      idle_timeout_secs=2, message_timeout_secs=2)
    harness.start()
    yield harness
    harness.close()
    logging.getLogger("collector").removeHandler(FAILURES)
    logging.getLogger("ctrail").removeHandler(FAILURES)


def exchange(port: int, raw: bytes, chunk: str) -> str:
    """'ack', 'closed' (no ack), after sending `raw` and ending our side."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return "closed"
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while data := sock.recv(65536):
                unpacker.feed(data)
                for answer in unpacker:
                    # Damage may have changed the chunk id: an ack of the id it now holds.
                    assert isinstance(answer, dict) and list(answer) == ["ack"], answer
                    assert answer == {"ack": chunk} or chunk.encode() not in raw, answer
                    return "ack"
        except ConnectionResetError:
            pass
        return "closed"


@settings(parent=FUZZ, max_examples=FORWARD_FUZZ_EXAMPLES)
@given(data=st.data())
def test_fuzz_every_chunk_is_acked_or_refused_and_the_input_keeps_serving(
        forward: Harness, data: st.DataObject) -> None:
    chunk = f"chunk-{time.monotonic_ns()}"
    raw = data.draw(frames(chunk))
    started = time.monotonic()
    exchange(forward.source.port, raw, chunk)
    assert time.monotonic() - started < 10
    assert forward.thread is not None and forward.thread.is_alive()
    failures, FAILURES.seen[:] = list(FAILURES.seen), []
    assert failures == [], (raw[:300], failures)


def test_fuzz_the_forward_input_still_serves_and_nothing_failed(forward: Harness) -> None:
    good = msgpack.packb(["kube.x", [[0, {"log": CRI + "after the fuzz"}]], {"chunk": "last"}],
                         use_bin_type=True)
    assert exchange(forward.source.port, good, "last") == "ack"
    consumer = forward.pipeline.bus.consumer("fuzz-check", (RAW,))
    entries = [RawEntry.decode(r.value) for r in consumer.poll(10**6, timeout_secs=1)]
    consumer.close()
    assert any(b"after the fuzz" in e.data for e in entries)
    print(f"{len(entries)} records on ctrail.raw, "
          f"{sum(e.format == DEAD_LETTER_FORMAT for e in entries)} of them dead letters")
