"""The console's locks, against a real server (uvicorn on loopback): nothing answers without a
session or token, state changes need the CSRF token, roles hold, a script in an event is text,
failed logins are rate limited, and logins and triage are in our own audit trail."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from console_scenario import (
    PASSWORD,
    SCRIPT_LABEL,
    SCRIPT_POD,
    SCRIPT_USER,
    add_users,
    incident,
    ingest,
    login,
    serve,
    write_lines,
)
from ctrail.audit.spool import SPOOL as SPOOL_NAME
from ctrail.console.app import ConsoleServer
from ctrail.console.users import ConsoleDb


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console")
    ingest(root / "data", write_lines(root / "audit.log", incident()))
    add_users(root / "data")
    server = serve(root / "data", max_failed_logins=3)
    yield server
    server.stop()


def spooled(data_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    path = data_dir / SPOOL_NAME
    records = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [r.get("value", r) for r in records]


def test_no_page_or_api_answers_without_a_session_or_token(console: ConsoleServer) -> None:
    anonymous = httpx.Client(base_url=console.url, timeout=30)
    paths = ["/", "/alerts", "/search?q=*", "/timeline?kind=user&value=alice", "/events/x",
             "/alerts/x", "/api/me", "/api/alerts", "/api/alerts/stream", "/api/search?q=*",
             "/api/events/x", "/api/timeline?kind=user&value=alice", "/api/export?q=*",
             "/api/suggest", "/api/users", "/api/openapi.json", "/docs", "/openapi.json",
             "/redoc", "/no-such-page"]
    for path in paths:
        response = anonymous.get(path, follow_redirects=False)
        if path.startswith("/api/"):
            assert response.status_code == 401, path
        else:
            assert response.status_code == 303 and response.headers["location"] == "/login", path
        assert b"alice" not in response.content and b"payments" not in response.content
    for path in ("/api/alerts/x/triage", "/api/logout"):
        assert anonymous.post(path, json={"action": "acknowledge"}).status_code == 401
    # A made-up session cookie or token is no session or token.
    forged = httpx.Client(base_url=console.url, cookies={"ctrail_session": "x" * 43})
    assert forged.get("/api/alerts").status_code == 401
    assert anonymous.get("/api/alerts", headers={"Authorization": "Bearer ctrail_forged"}
                         ).status_code == 401
    forged.close()
    anonymous.close()
    # Every route the app has, with each of its methods: only the login routes and the
    # static files answer.
    public = {"/login", "/api/login", "/login/oidc", "/login/oidc/callback", "/static"}
    probed = 0
    with httpx.Client(base_url=console.url, timeout=30) as client:
        for path, methods in app_routes(console.server.config.app.routes):
            if path in public:
                continue
            url = re.sub(r"{[^}]+}", "x", path)
            for method in methods - {"HEAD"}:
                response = client.request(method, url, follow_redirects=False)
                probed += 1
                if path.startswith("/api/") or method != "GET":
                    assert response.status_code == 401, (method, path)
                else:
                    assert response.status_code == 303, (method, path)
                    assert response.headers["location"] == "/login"
    assert probed >= 26          # the 26 routes of this writing


def app_routes(routes: list[Any]) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from app_routes(route.original_router.routes)
        else:
            yield route.path, set(getattr(route, "methods", None) or {"GET"})


def test_the_session_cookie_is_http_only_and_same_site(console: ConsoleServer) -> None:
    response = httpx.post(console.url + "/api/login", json={"user": "view", "password": PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "content-security-policy" in response.headers


def test_state_changes_need_the_csrf_token(console: ConsoleServer) -> None:
    client = login(console.url, "admin")
    alert = client.get("/api/alerts").json()["alerts"][0]["event"]["id"]
    url = f"/api/alerts/{alert}/triage"
    assert client.post(url, json={"action": "note", "note": "x"}).status_code == 403
    assert client.post(url, json={"action": "note", "note": "x"},
                       headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post("/api/logout").status_code == 403          # logout too
    ok = client.post(url, json={"action": "note", "note": "seen"},
                     headers={"X-CSRF-Token": client.csrf})       # type: ignore[attr-defined]
    assert ok.status_code == 200 and ok.json()["note"] == "seen"
    secret = "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789"
    noted = client.post(url, json={"action": "note", "note": f"pasted {secret} by mistake"},
                        headers={"X-CSRF-Token": client.csrf})    # type: ignore[attr-defined]
    assert noted.status_code == 200 and "abcdefghijklmnopqrstuvwxyz0123456789" not in noted.text
    assert noted.json()["note"].startswith("pasted Authorization: Bearer ")
    history = client.get(f"/api/alerts/{alert}").json()["triage"]["history"]
    assert [h["note"] for h in history if h["action"] == "note"][0] == "seen"
    stored = b"".join(path.read_bytes() for path in console.db.path.parent.glob("console.db*"))
    assert b"seen" in stored and b"abcdefghijklmnopqrstuvwxyz0123456789" not in stored
    assert "abcdefghijklmnopqrstuvwxyz0123456789" not in str(spooled(console.db.path.parent))
    client.close()


def test_another_sites_page_cannot_post_to_the_console(console: ConsoleServer) -> None:
    evil = {"Origin": "https://evil.example"}
    forged_login = httpx.post(console.url + "/login", headers=evil,
                              data={"user": "admin", "password": PASSWORD})
    assert forged_login.status_code == 403 and "set-cookie" not in forged_login.headers
    client = login(console.url, "admin")
    try:
        alert = client.get("/api/alerts").json()["alerts"][0]["event"]["id"]
        headers = {**evil, "X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
        refused = client.post(f"/api/alerts/{alert}/triage", headers=headers,
                              json={"action": "acknowledge"})
        assert refused.status_code == 403 and "cross-origin" in refused.text
        own = {"Origin": console.url, "X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
        unknown = client.post(f"/api/alerts/{alert}/triage", headers=own,
                              json={"action": "assign", "assignee": "nobody"})
        assert unknown.status_code == 400 and "console user" in unknown.text
        assigned = client.post(f"/api/alerts/{alert}/triage", headers=own,
                               json={"action": "assign", "assignee": "pay"})
        assert assigned.status_code == 200
        assert client.get(f"/api/alerts/{alert}").json()["triage"]["assignee"] == "pay"
    finally:
        client.close()


def test_the_event_view_shows_the_raw_record_beside_ecs_fields_marking_inferred_ones(
        console: ConsoleServer) -> None:
    client = login(console.url, "admin")
    try:
        found = client.get("/api/search", params={
            "q": "kubernetes.pod.name:checkout-1 AND _exists_:containertrail.inferred"}).json()
        doc = next(e for e in found["events"]
                   if "kubernetes.pod.uid" in e["containertrail"]["inferred"])
        page = client.get(f"/events/{doc['event']['id']}").text
        raw = page.split('<pre class="raw" id="raw">', 1)[1].split("</pre>", 1)[0]
        assert '&#34;auditID&#34;' in raw or "&quot;auditID&quot;" in raw   # the raw record, escaped
        assert '<tr class="inferred"><th>kubernetes.pod.uid</th>' in page
        assert "<th>kubernetes.pod.name</th>" in page and \
            '<tr class="inferred"><th>kubernetes.pod.name</th>' not in page
        assert page.count("(inferred)") == len(doc["containertrail"]["inferred"])
    finally:
        client.close()


def test_api_tokens_work_without_csrf_and_roles_hold(console: ConsoleServer,
                                                     tmp_path: Path) -> None:
    db = ConsoleDb(console.db.path.parent)
    db.add_token("view", "ctrail_viewer-token-for-the-test", "test")
    db.close()
    viewer = httpx.Client(base_url=console.url,
                          headers={"Authorization": "Bearer ctrail_viewer-token-for-the-test"})
    assert viewer.get("/api/me").json()["user"]["role"] == "viewer"
    alert = viewer.get("/api/alerts").json()["alerts"][0]["event"]["id"]
    refused = viewer.post(f"/api/alerts/{alert}/triage", json={"action": "acknowledge"})
    assert refused.status_code == 403 and "responder" in refused.text
    assert viewer.get("/api/users").status_code == 403
    admin = login(console.url, "admin")
    assert {u["name"] for u in admin.get("/api/users").json()["users"]} == {"admin", "pay",
                                                                           "view"}
    # The API is documented (OpenAPI), to a logged-in user or a token only.
    document = viewer.get("/api/openapi.json").json()
    assert {"/api/search", "/api/alerts", "/api/alerts/{alert}/triage", "/api/timeline",
            "/api/export", "/api/alerts/stream", "/api/reports"} <= set(document["paths"])
    assert not any(path.startswith(("/alerts", "/search")) for path in document["paths"])
    admin.close()
    viewer.close()


def test_a_script_in_an_event_field_is_shown_as_text(console: ConsoleServer) -> None:
    client = login(console.url, "admin")
    events = client.get("/api/search", params={"q": "kubernetes.namespace:shop"}).json()["events"]
    assert events, "the shop events were stored"
    shop_alert = [a for a in client.get("/api/alerts").json()["alerts"]
                  if a["kubernetes"]["namespace"] == "shop"][0]
    responses = [client.get("/search", params={"q": "kubernetes.namespace:shop"}),
                 client.get("/alerts"), client.get(f"/alerts/{shop_alert['event']['id']}"),
                 client.get("/timeline", params={"kind": "user", "value": SCRIPT_USER})]
    responses += [client.get(f"/events/{e['event']['id']}") for e in events]
    assert [r.status_code for r in responses] == [200] * len(responses)
    joined = "\n".join(r.text for r in responses)
    client.close()
    for script in (SCRIPT_USER, SCRIPT_POD, SCRIPT_LABEL):
        assert script not in joined                       # never as markup
    assert "&lt;script&gt;window.__xss=&#39;user&#39;&lt;/script&gt;" in joined
    assert "&lt;img src=x onerror=" in joined
    assert "&lt;script&gt;window.__xss=&#39;label&#39;&lt;/script&gt;" in joined


def test_triage_is_append_only_and_in_the_audit_trail(console: ConsoleServer) -> None:
    db = ConsoleDb(console.db.path.parent)
    entry = db.append_triage("some-alert", "note", "admin", {"note": "first"})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db._db.execute("UPDATE triage SET action = 'close' WHERE seq = ?", (entry["seq"],))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db._db.execute("DELETE FROM triage")
    db.close()
    triage = [r for r in spooled(console.db.path.parent) if r["event"]["action"] == "alert-triage"]
    assert any(orjson.loads(r["event"]["original"]).get("note") == "seen" for r in triage)
    assert all(r["user"]["name"] in ("admin", "pay") for r in triage)


# Last: it locks the test client's address out for the window.
def test_failed_logins_are_rate_limited_and_audited(console: ConsoleServer) -> None:
    url = console.url + "/api/login"
    for _ in range(3):
        assert httpx.post(url, json={"user": "pay", "password": "wrong"}).status_code == 401
    # Past the limit even the right password is refused, for that name...
    right = httpx.post(url, json={"user": "pay", "password": PASSWORD})
    assert right.status_code == 429
    # ...and the page login says the same.
    page = httpx.post(console.url + "/login", data={"user": "pay", "password": PASSWORD})
    assert page.status_code == 429 and "too many failed logins" in page.text
    # The address is limited too: another name from it is refused now.
    assert httpx.post(url, json={"user": "admin", "password": PASSWORD}).status_code == 429
    records = [r for r in spooled(console.db.path.parent)
               if r["event"]["action"] == "console-login"]
    failures = [r for r in records if r["event"]["outcome"] == "failure"]
    assert len(failures) >= 5 and {r["user"]["name"] for r in failures} >= {"pay", "admin"}
    assert any("rate limited" in r["event"]["original"] for r in failures)
    assert PASSWORD not in str(records) and "wrong" not in [
        orjson.loads(r["event"]["original"]).get("password") for r in records]


def test_a_malformed_login_is_refused_without_a_500_or_an_echo_of_what_was_sent(
        console: ConsoleServer) -> None:
    """Found by tests/e2e/test_console_fuzz.py: FastAPI's validation answer failed with a 500 on
    a body that is not UTF-8, and echoed the values sent (a password) in its 422."""
    anonymous = httpx.Client(base_url=console.url, timeout=30)
    binary = anonymous.post("/api/login", content=b"\x00\xff" * 20)
    assert binary.status_code == 422
    wrong_type = anonymous.post("/api/login", json={"user": "view", "password": 12345678901})
    assert wrong_type.status_code == 422 and "12345678901" not in wrong_type.text
    as_text = anonymous.post("/api/login", content=b'{"user":"view","password":"hunter2-pass"}')
    assert as_text.status_code == 422 and "hunter2-pass" not in as_text.text
    assert as_text.json()["detail"][0]["loc"] == ["body"]
    anonymous.close()


def test_a_login_cut_short_leaves_no_traceback(console: ConsoleServer) -> None:
    """Found by tests/e2e/test_console_fuzz.py: a client leaving before its login body was in
    made Starlette send a 500 to the closed connection and uvicorn log a traceback, one per
    request, for anyone to provoke."""
    import logging
    import socket

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collected = Collect()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(collected)
    try:
        port = int(console.url.rsplit(":", 1)[1])
        for path in (b"/login", b"/api/login"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\n\r\nuser=v")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
        assert httpx.get(f"{console.url}/login").status_code == 200
    finally:
        logger.removeHandler(collected)
    assert collected.messages == []
