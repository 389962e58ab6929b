"""Fuzz of the console's gate (authentication, roles, CSRF, cross-origin) on a real uvicorn
server, from a grammar of HTTP/1.1 requests (Hypothesis): every page and API path, tricks on
them (dot segments, percent-encoding, doubled slashes, case), methods, a viewer's session cookie
and API token beside forged and malformed ones, CSRF tokens right and wrong, origins, bodies,
and byte-level damage on top.

What must hold for every request, judged from what uvicorn's own parser (h11) makes of it: it
is answered in time and never with a 5xx; without a real credential only the public paths
(/login, /api/login, /static/) answer 2xx; a viewer changes nothing (no 2xx to any state
change but a login); and the console still serves afterwards. It stores nothing a stranger
sends, so every byte is accounted for by its answer (a failed login by its audit record too)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Iterator
from urllib.parse import unquote, urlsplit

import h11
import httpx
import pytest
from hypothesis import given, settings, strategies as st

from console_scenario import incident_console, login
from ctrail.console.app import ConsoleServer
from ctrail.console.auth import PUBLIC_PATHS, PUBLIC_PREFIXES, SAFE_METHODS
from ctrail.console.users import ConsoleDb
from tests.unit.collector.parser_fuzz import FUZZ, damaged

CONSOLE_FUZZ_EXAMPLES: Final = int(os.environ.get("CTRAIL_LISTENER_FUZZ_EXAMPLES", "100"))
VIEW_TOKEN: Final = b"ctrail_viewer-fuzz-token-0123456789"
SESSION: Final = b"<session>"                      # replaced by the viewer's real session id
CSRF: Final = b"<csrf>"
READ_PATHS: Final = [
    b"/", b"/alerts", b"/search?q=*", b"/events/x", b"/alerts/x", b"/reports", b"/evidence",
    b"/timeline?kind=user&value=alice", b"/api/me", b"/api/alerts", b"/api/search?q=*",
    b"/api/suggest", b"/api/events/x", b"/api/timeline?kind=user&value=alice",
    b"/api/export?q=*", b"/api/users", b"/api/openapi.json", b"/docs", b"/openapi.json",
    b"/api/reports", b"/api/evidence", b"/login", b"/static/console.js", b"/no-such-page",
    # the same places, reached sideways
    b"/static/../api/users", b"/static/%2e%2e/api/users", b"//api/users", b"/api/users/",
    b"/API/users", b"/api/%75sers", b"/login/../api/users", b"/api/login/../users",
    b"/%6cogin", b"/static/..%2fapi/me", b"/api/me?user=admin", b"/api/me#x", b"*",
    b"http://x/api/users", b"/login/oidc", b"/login/oidc/callback?code=x&state=y"]
WRITE_PATHS: Final = [b"/api/alerts/x/triage", b"/api/reports/weekly/run",
                      b"/api/evidence/verify", b"/api/users", b"/api/login", b"/login",
                      b"/static/../api/evidence/verify", b"/login/../api/alerts/x/triage"]
BODIES: Final = [b"", b'{"action":"acknowledge"}', b'{"user":"view","password":"wrong"}',
                 b"user=view&password=wrong", b'{"action":', b"\x00\xff" * 20,
                 b'{"action":"close","reason":"' + b"x" * 5000 + b'"}']


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET"] * 10 + [b"POST"] * 6 + [b"HEAD", b"PUT", b"DELETE",
                                                                    b"OPTIONS", b"get", b"PATCH"]))
    target = draw(st.sampled_from(READ_PATHS if method in (b"GET", b"HEAD") else
                                  WRITE_PATHS + READ_PATHS[:6]))
    headers = [b"Host: x"]
    headers += draw(st.lists(st.sampled_from([
        b"Cookie: ctrail_session=" + SESSION, b"Cookie: ctrail_session=" + SESSION,
        b"Cookie: ctrail_session=forged", b"Cookie: ctrail_session=",
        b"Cookie: other=1; ctrail_session=" + SESSION + b"x",
        b"Authorization: Bearer " + VIEW_TOKEN, b"Authorization: Bearer " + VIEW_TOKEN,
        b"Authorization: Bearer ctrail_", b"Authorization: Bearer wrong",
        b"Authorization: bearer " + VIEW_TOKEN[:-1], b"Authorization: Basic dmlldzp4",
        b"X-CSRF-Token: " + CSRF, b"X-CSRF-Token: wrong", b"X-CSRF-Token: ",
        b"Origin: http://x", b"Origin: https://evil.example", b"Origin: null",
        b"Content-Type: application/json", b"Content-Type: application/x-www-form-urlencoded",
        b"X-Forwarded-For: 10.0.0.1", b"Connection: keep-alive", b"Expect: 100-continue",
        b"X-" + b"y" * 20000 + b": 1"]), max_size=5))
    body = draw(st.sampled_from(BODIES)) if method not in (b"GET", b"HEAD") else b""
    headers.append(draw(st.sampled_from([b"Content-Length: %d" % len(body)] * 8 + [
        b"Content-Length: %d" % (len(body) + 3), b"Transfer-Encoding: chunked",
        b"Content-Length: %d\r\nContent-Length: 0" % len(body)])))
    if headers[-1] == b"Transfer-Encoding: chunked":
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    headers = draw(st.permutations(headers))
    raw = (method + b" " + target + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers)
           + b"\r\n" + body)
    return damaged(draw, raw)


@dataclass
class Parsed:
    """What uvicorn's parser (h11) reads from the request: the request, if it got that far,
    and whether the request is complete (or broken, which is answered at once)."""

    method: bytes | None = None
    target: bytes = b""
    complete: bool = False


def parse(raw: bytes) -> Parsed:
    server = h11.Connection(h11.SERVER)
    parsed = Parsed()
    if not raw:
        return parsed                             # (h11 takes b"" for the end of the stream)
    server.receive_data(raw)
    try:
        while (event := server.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Request):
                parsed.method, parsed.target = event.method, event.target
            if isinstance(event, h11.EndOfMessage):
                parsed.complete = True
                break
    except h11.RemoteProtocolError:
        parsed.complete = True                    # answered 400 at once
    return parsed


def statuses(port: int, raw: bytes, parsed: Parsed) -> list[int]:
    """Send `raw` and read the one answer (uvicorn answers one request per exchange here: it
    drops the connection when the client ends its side, so an incomplete request's side is
    ended only then, and what was answered, if anything, is read until the close)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=parsed.method or b"GET", target=b"/",
                            headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    found: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(raw)
            if not parsed.complete:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            client.receive_data(data)
            try:
                while (event := client.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, (h11.Response, h11.InformationalResponse)):
                        found.append(event.status_code)
                    if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        return found
            except h11.RemoteProtocolError:
                return found
            if not data:
                return found


@dataclass
class Counts(logging.Handler):
    """What the run saw: answers by status, and uvicorn's error log lines (an exception in the
    application is logged there even when the client never sees the 500)."""

    examples: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    races: int = 0

    def __post_init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, h11.LocalProtocolError) and "MUST_CLOSE" in str(error):
            # uvicorn's own race: the client ended its side mid-request (we do, for incomplete
            # requests) and h11 refuses the answer before uvicorn notices the client is gone.
            self.races += 1
            return
        self.errors.append(f"{record.getMessage()} {error!r}")

    __hash__ = logging.Handler.__hash__


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ConsoleServer, bytes, bytes, Counts]]:
    root = tmp_path_factory.mktemp("console-fuzz")
    server = incident_console(root, max_failed_logins=1000)
    db = ConsoleDb(Path(server.db.path).parent)
    db.add_token("view", VIEW_TOKEN.decode(), "fuzz")
    db.close()
    viewer = login(server.url, "view")
    session = viewer.cookies["ctrail_session"].encode()
    counts = Counts()
    logging.getLogger("uvicorn.error").addHandler(counts)
    try:
        yield server, session, viewer.csrf.encode(), counts   # type: ignore[attr-defined]
    finally:
        logging.getLogger("uvicorn.error").removeHandler(counts)
        viewer.close()
        server.stop()


def public(target: bytes) -> bool:
    path = unquote(urlsplit(target.decode("latin-1")).path)
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@settings(parent=FUZZ, max_examples=CONSOLE_FUZZ_EXAMPLES)
@given(raw=requests())
def test_fuzz_the_gate_lets_no_stranger_in_and_no_viewer_change_anything(
        console: tuple[ConsoleServer, bytes, bytes, Counts], raw: bytes) -> None:
    server, session, csrf, counts = console
    raw = raw.replace(SESSION, session).replace(CSRF, csrf)
    parsed = parse(raw)
    port = int(server.url.rsplit(":", 1)[1])
    found = statuses(port, raw, parsed)
    final = [status for status in found if status >= 200]
    assert parsed.complete is False or final, (raw[:300], found)
    assert not any(status >= 500 for status in final), (raw[:300], found)
    ok = any(200 <= status < 300 for status in final)
    if ok and parsed.method is not None and not public(parsed.target):
        credential = VIEW_TOKEN in raw or session in raw
        assert credential, (raw[:300], found)                 # no stranger in
        assert parsed.method.upper() in {m.encode() for m in SAFE_METHODS}, (raw[:300], found)
    counts.examples += 1
    for status in final:
        counts.by_status[status] = counts.by_status.get(status, 0) + 1


def test_fuzz_left_the_console_serving(
        console: tuple[ConsoleServer, bytes, bytes, Counts]) -> None:
    server, session, _csrf, counts = console
    token = httpx.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {VIEW_TOKEN.decode()}"})
    cookie = httpx.get(f"{server.url}/api/me", cookies={"ctrail_session": session.decode()})
    assert token.json()["user"]["name"] == cookie.json()["user"]["name"] == "view"
    print(f"console: {counts.examples} fuzzed requests, answers by status "
          f"{dict(sorted(counts.by_status.items()))}; uvicorn's half-close race {counts.races}")
    assert counts.errors == []                   # no exception in the application, seen or not
