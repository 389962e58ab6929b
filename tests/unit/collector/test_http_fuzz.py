"""Fuzz of every webhook source's listener (the audit webhook, Falco's http_output, Distribution
and Harbor notifications) on a real socket, from a grammar of HTTP/1.1 requests (Hypothesis):
methods, targets, versions, credentials in each sender's form (Bearer, Falco's Basic, Harbor's
bare value), every framing (Content-Length right, wrong, doubled, malformed; chunked with odd
chunk lines; both; none), headers, bodies (what each real sender posts, bad JSON, binary), line
endings, and byte-level damage on top.

What must hold for every request: the listener answers with a status (a bare HTTP/0.9 error page
for what is not HTTP/1.x), in time, and keeps serving; and every byte is accounted for: each
200 is one record on ctrail.raw (by its request id), and nothing else is."""

from __future__ import annotations

import base64
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Final, Iterator

import pytest
from hypothesis import given, settings, strategies as st

from collector.sources.distribution_webhook import DistributionWebhookConfig
from collector.sources.falco_http import FalcoHttpConfig
from collector.sources.harbor_webhook import HarborWebhookConfig
from ctrail.bus.codec import RawEntry
from ctrail.runtime.http import ListenerConfig
from ctrail.secrets import EnvRef
from tests.unit.collector.parser_fuzz import FUZZ, SHARED_DATA, damaged
from tests.unit.collector.test_http_listener import (
    EVENT_LIST,
    TOKEN,
    Running,
    _token as _token,  # noqa: F401 (autouse)
    k8s,
    running,
)

HTTP_FUZZ_EXAMPLES: Final = int(os.environ.get("CTRAIL_LISTENER_FUZZ_EXAMPLES", "100"))
"""A request is a connection (~60 ms with generation): 100 in the suite; scripts/fuzz: 10 000."""
STATUS: Final = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
BARE_ERROR: Final = re.compile(rb'Error code: (\d{3})|^\{"status":(\d{3}),')
REQUEST_ID: Final = re.compile(rb"X-Request-Id: ([0-9a-f-]{36})\r\n")
ANSWERED: Final = {100, 200, 400, 401, 405, 411, 413, 414, 415, 417, 429, 431, 501, 503, 505}


def _sample(path: str, fallback: bytes) -> bytes:
    """A body a real sender posted (../shared/data/real), or `fallback` without the samples."""
    return (SHARED_DATA / path).read_bytes() if (SHARED_DATA / path).is_file() else fallback


FALCO_ALERT: Final = _sample("falco-alerts-json/falco_website_alerts.jsonl", b"").split(b"\n")[0] \
    or b'{"output":"x","priority":"Warning","rule":"r","time":"2026-01-01T00:00:00Z"}'
DISTRIBUTION_ENVELOPE: Final = _sample(
    "distribution-notifications/docs_push_http_request.txt", b"\n\n{}").partition(b"\n\n")[2]
HARBOR_EVENT: Final = _sample("harbor-webhooks/artifact_pushed.default.json", b"{}")
BODIES: Final = [EVENT_LIST, FALCO_ALERT, DISTRIBUTION_ENVELOPE, HARBOR_EVENT, b"", b"{}",
                 b'{"kind":"EventList","items":[{"verb":1}]}', b"\x00\xff\xfe" * 50,
                 b"not json\r\n\r\n0\r\n\r\n", b"[" * 3000]
"""Every listener gets every body: another sender's body is dead-lettered, and still counted."""
FUZZ_LIMITS: Final = {"max_requests_per_client_per_sec": 1e9, "max_request_burst_per_client": 10**9,
                      "max_connections_per_client": 64, "header_timeout_secs": 5,
                      "request_timeout_secs": 10}
TOKEN_REF: Final = EnvRef(env="CTRAIL_TEST_HOOK_TOKEN")
LISTENERS: Final = {
    "k8s_audit_webhook": lambda: k8s(**FUZZ_LIMITS),
    "falco_http": lambda: FalcoHttpConfig(port=0, token=TOKEN_REF, ack_timeout_secs=5,
                                          **FUZZ_LIMITS),
    "distribution_webhook": lambda: DistributionWebhookConfig(port=0, token=TOKEN_REF,
                                                              ack_timeout_secs=5, **FUZZ_LIMITS),
    "harbor_webhook": lambda: HarborWebhookConfig(port=0, token=TOKEN_REF, ack_timeout_secs=5,
                                                  **FUZZ_LIMITS),
}


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    out = b""
    for piece in pieces:
        size = draw(st.sampled_from([b"%x"] * 20 + [b"%X", b"0%x", b"0x%x", b" %x", b"%x ", b"+%x",
                                     b"%x;a=b", b"%x ;ext", b"-%x", b"%x_0"])) % len(piece)
        out += size + draw(st.sampled_from([b"\r\n"] * 10 + [b"\n"])) + piece + b"\r\n"
    last = draw(st.sampled_from([b"0\r\n\r\n"] * 10 + [b"0\r\nX-Trailer: 1\r\n\r\n", b"0\r\n", b"",
                                 b"00\r\n\r\n", b"ffffffffffffffffffff\r\n\r\n"]))
    return out + last


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"POST"] * 30 + [b"GET", b"PUT", b"post", b"", b"P\x00ST",
                                                    b"OPTIONS", b"HEAD"]))
    target = draw(st.sampled_from([b"/", b"/audit", b"*", b"http://x/", b"", b"/%00",
                                   b"/" + b"a" * 9000]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 30 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ",
                                                        b"", b"HTXP/1.1", b"HTTP/1"]))
    newline = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n"]))
    body = draw(st.sampled_from(BODIES))
    headers = [b"Host: x", draw(st.sampled_from(
        [b"Authorization: Bearer " + TOKEN.encode()] * 10      # kube-apiserver, Distribution
        + [b"Authorization: Basic " + base64.b64encode(b"falco:" + TOKEN.encode())] * 2  # Falco
        + [b"Authorization: " + TOKEN.encode()] * 2            # Harbor: the value as typed
        + [b"Authorization: Bearer wrong", b"X-No-Auth: 1"]))]
    headers += draw(st.lists(st.sampled_from([
        b"Authorization: Bearer wrong", b"Authorization:Bearer " + TOKEN.encode(),
        b"Authorization: Basic Zm9vOnMzY3JldC10b2tlbg==", b"Authorization: ",
        b"Authorization: " + TOKEN.encode(), b"Authorization: Basic Zm9vOndyb25n",
        b"Expect: 100-continue", b"Content-Encoding: gzip", b"Content-Type: application/json",
        b"Connection: close", b"Connection: keep-alive", b"X-" + b"y" * 40000 + b": 1",
        b" folded: line", b"No-Colon", b"Bad Name: 1", b"\xff: \xfe"]), max_size=3))
    framing = draw(st.sampled_from(["length"] * 6 + ["chunked"] * 6 + ["none", "both",
                                    "double", "odd-length"]))
    if framing in ("length", "both", "double"):
        headers.append(b"Content-Length: %d" % len(body))
    if framing == "double":
        headers.append(b"Content-Length: %d" % draw(st.sampled_from([len(body), 0, 7])))
    if framing == "odd-length":
        n = len(body)
        headers.append(b"Content-Length: " + draw(st.sampled_from([
            b"+%d" % n, b"0x%x" % n, b"%d, %d" % (n, n), b"-%d" % n, b" %d " % n, b"\xb2",
            b"9" * 30, b"%d_0" % n, b"%d.0" % n])))
    if framing in ("chunked", "both"):
        headers.append(draw(st.sampled_from([b"Transfer-Encoding: chunked"] * 10 + [
            b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: Chunked",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"])))
        body = draw(chunked_body(body))
    headers = draw(st.permutations(headers))
    raw = (b" ".join(p for p in (method, target, version) if p) + newline +
           b"".join(h + newline for h in headers) + newline + body)
    return damaged(draw, raw)


def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw`, end our side (the server sees where the request ends), read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                                  # refused before it was all sent: fine
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


@dataclass
class Accounting:
    stored: set[bytes] = field(default_factory=set)      # request ids answered 200
    maybe: set[bytes] = field(default_factory=set)       # answered 503: durable later, perhaps
    examples: int = 0


@pytest.fixture(scope="module", params=sorted(LISTENERS))
def listener(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Running, Accounting]]:
    config: ListenerConfig = LISTENERS[request.param]()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTRAIL_TEST_HOOK_TOKEN", TOKEN)
        with running(config, tmp_path_factory.mktemp("fuzz")) as run:
            yield run, Accounting()


def responses(answer: bytes) -> list[tuple[int, bytes | None]]:
    """(status, request id) of each response in what the server sent."""
    starts = [m.start() for m in STATUS.finditer(answer)]
    found = []
    for begin, end in zip(starts, [*starts[1:], len(answer)]):
        part = answer[begin:end]
        status = int(STATUS.match(part).group(1))           # type: ignore[union-attr]
        request_id = REQUEST_ID.search(part)
        found.append((status, request_id.group(1) if request_id else None))
    return found


@settings(parent=FUZZ, max_examples=HTTP_FUZZ_EXAMPLES)
@given(raw=requests())
def test_fuzz_every_request_is_answered_and_accounted_for(
        listener: tuple[Running, Accounting], raw: bytes) -> None:
    run, accounting = listener
    answer = exchange(run.listener.port, raw)
    answered = responses(answer)
    # Not a word on the first line (nothing sent, a blank line): closed without an answer.
    silent = not raw.split(b"\n", 1)[0].strip()
    bare = BARE_ERROR.search(answer)             # the stdlib's answer as to HTTP/0.9
    assert answered or silent or bare, (raw[:300], answer[:300])
    if bare and not answered:
        answered = [(int(bare.group(1) or bare.group(2)), None)]
    assert {status for status, _ in answered} <= ANSWERED, (raw[:300], answer[:300])
    for status, request_id in answered:
        assert (request_id is not None) == (status == 200 or (status == 503 and
                                                             request_id is not None))
        if request_id is not None:
            (accounting.stored if status == 200 else accounting.maybe).add(request_id)
    accounting.examples += 1


def test_fuzz_accounting_and_the_listener_still_serves(
        listener: tuple[Running, Accounting]) -> None:
    """After the fuzz run (the test above, on the same listener): what is on ctrail.raw is
    exactly what was answered 200 (plus, at most, bodies answered 503 "not yet durable")."""
    run, accounting = listener
    answer = exchange(run.listener.port, b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(EVENT_LIST)
                      + EVENT_LIST)
    [(status, request_id)] = responses(answer)
    assert status == 200 and request_id is not None
    accounting.stored.add(request_id)
    on_bus = {RawEntry.decode(r.value).origin.rsplit(" ", 1)[1].encode()
              for r in run.published()}
    assert accounting.stored <= on_bus <= accounting.stored | accounting.maybe
    print(f"{run.collector.name} ({run.collector.format}): {accounting.examples} fuzzed "
          f"requests, {len(accounting.stored) - 1} stored")
