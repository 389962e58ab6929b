"""Fuzz of the ops server (/healthz, /readyz, /metrics) on a real socket, from a grammar of
HTTP/1.1 requests (Hypothesis): methods, targets, versions, credentials right, wrong and
malformed, bodies and framings a GET should not have, oversized and repeated headers, pipelined
requests, line endings, and byte-level damage on top.

What must hold for every request: it is answered with a status (a bare HTTP/0.9 error page for
what is not HTTP/1.x) or, with nothing on its first line, closed; in time; 200 only to a request
carrying the token for one of the three paths; and the server keeps serving, with no thread left
behind. The ops server stores nothing, so every byte is accounted for by its answer."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Final, Iterator

import pytest
from hypothesis import given, settings, strategies as st

from ctrail.runtime.ops import OpsConfig, OpsServer
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import EnvRef
from tests.unit.collector.parser_fuzz import FUZZ, damaged
from tests.unit.collector.test_http_fuzz import exchange, responses
from tests.waiting import wait_for

OPS_FUZZ_EXAMPLES: Final = int(os.environ.get("CTRAIL_LISTENER_FUZZ_EXAMPLES", "100"))
TOKEN: Final = b"ops-fuzz-token"
PATHS: Final = (b"/healthz", b"/readyz", b"/metrics")
ANSWERED: Final = {200, 400, 401, 404, 405, 414, 417, 431, 501, 505}
BASIC_TOKEN: Final = b"cHJvbWV0aGV1czpvcHMtZnV6ei10b2tlbg=="      # prometheus:ops-fuzz-token
BARE_ERROR: Final = re.compile(rb"Error code: (\d{3})")
"""The stdlib's error page, without a status line: the answer to HTTP/0.9 (`GET /`)."""


@st.composite
def one_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET"] * 20 + [b"HEAD", b"POST", b"get", b"", b"G\x00T",
                                                   b"OPTIONS", b"DELETE", b"PRI"]))
    target = draw(st.sampled_from([*PATHS * 6, b"/metrics?x=1", b"/healthz/", b"/", b"*",
                                   b"http://x/metrics", b"//metrics", b"/%2e%2e/metrics", b"",
                                   b"/" + b"m" * 9000]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 20 + [b"HTTP/1.0", b"HTTP/2.0", b"",
                                                        b"HTTP/1.1 ", b"HTTX/1.1"]))
    newline = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n"]))
    credential = draw(st.sampled_from(
        [b"Authorization: Bearer " + TOKEN] * 8 + [
            b"Authorization: bearer  " + TOKEN + b" ", b"Authorization: " + TOKEN,
            b"Authorization: Basic " + BASIC_TOKEN,                     # Prometheus basic_auth
            b"Authorization: Bearer wrong", b"Authorization: Bearer ", b"Authorization: Basic !!",
            b"Authorization: Bearer " + TOKEN + b"x", b""]))
    headers = [h for h in (b"Host: x", credential) if h]
    headers += draw(st.lists(st.sampled_from([
        b"Authorization: Bearer wrong", b"Connection: close", b"Connection: keep-alive",
        b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 9",
        b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Accept: text/plain",
        b"X-" + b"y" * 40000 + b": 1", b" folded: line", b"No-Colon", b"\xff: \xfe",
        b"X-Many: 1\r\n" * 80]), max_size=3))
    body = draw(st.sampled_from([b""] * 6 + [b"hello", b"0\r\n\r\n", b"GET /metrics HTTP/1.1\r\n\r\n"]))
    headers = draw(st.permutations(headers))
    return (b" ".join(p for p in (method, target, version) if p) + newline +
            b"".join(h + newline for h in headers) + newline + body)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    raw = b"".join(draw(st.lists(one_request(), min_size=1, max_size=3)))   # pipelined too
    return damaged(draw, raw)


@dataclass
class Counts:
    examples: int = 0
    ok: int = 0


def ops_threads() -> int:
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


@pytest.fixture(scope="module")
def ops() -> Iterator[tuple[OpsServer, Counts]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_OPS_FUZZ_TOKEN", TOKEN.decode())
        server = OpsConfig(port=0, token=EnvRef(env="TEST_OPS_FUZZ_TOKEN"),
                           max_requests_per_client_per_sec=1e9, max_request_burst_per_client=10**9,
                           header_timeout_secs=5, request_timeout_secs=10
                           ).build(Telemetry(), lambda: True)
    try:
        yield server, Counts()
    finally:
        server.close()


@settings(parent=FUZZ, max_examples=OPS_FUZZ_EXAMPLES)
@given(raw=requests())
def test_fuzz_every_request_is_answered_and_only_the_token_opens_it(
        ops: tuple[OpsServer, Counts], raw: bytes) -> None:
    server, counts = ops
    answer = exchange(server.port, raw)
    answered = [status for status, _ in responses(answer)]
    silent = not raw.split(b"\n", 1)[0].strip()
    bare = BARE_ERROR.search(answer)
    assert answered or silent or bare, (raw[:300], answer[:300])
    if bare and not answered:
        answered = [int(bare.group(1))]
    assert set(answered) <= ANSWERED, (raw[:300], answer[:300])
    if 200 in answered:
        assert TOKEN in raw or BASIC_TOKEN in raw, (raw[:300], answer[:300])
        assert any(path in raw for path in PATHS), (raw[:300], answer[:300])
    counts.examples += 1
    counts.ok += answered.count(200)


def test_fuzz_left_no_thread_behind_and_the_server_still_serves(
        ops: tuple[OpsServer, Counts]) -> None:
    server, counts = ops
    probe = b"GET /readyz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n\r\n"
    assert [status for status, _ in responses(exchange(server.port, probe))] == [200]
    wait_for(lambda: ops_threads() == 0, timeout=5)
    print(f"ops: {counts.examples} fuzzed requests, {counts.ok} answered 200")
