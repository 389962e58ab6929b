"""Reports and evidence in the console: listed, opened and run by unscoped users (run: admin),
never shown to a user limited to namespaces; the evidence archive's last verification is read
from our own audit trail, and a verification can be run from the page."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from console_scenario import (
    add_users,
    incident,
    incident_console,
    ingest,
    login,
    serve,
    write_lines,
)
from ctrail.console.app import ConsoleServer
from ctrail.console.operations import REPORT_POLICY
from ctrail.event import Alert
from sinks.notify.outbox import NewRow, Outbox
from sinks.notify.report_notice import outbox_path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleServer, Path]]:
    root = tmp_path_factory.mktemp("operations")
    config = root / "ctrail.yaml"
    config.write_text("evidence: {}\n")
    server = incident_console(root, config)
    yield server, root
    server.stop()


def test_reports_are_run_listed_and_opened_by_unscoped_users_only(
        console: tuple[ConsoleServer, Path]) -> None:
    server, _root = console
    admin, view, pay = (login(server.url, name) for name in ("admin", "view", "pay"))
    try:
        names = {r["name"] for r in admin.get("/api/reports").json()["reports"]}
        assert {"weekly", "user-activity", "compliance"} <= names
        csrf = {"X-CSRF-Token": admin.csrf}  # type: ignore[attr-defined]
        ran = admin.post("/api/reports/weekly/run", headers=csrf)
        assert ran.status_code == 200, ran.text
        html = [f for f in ran.json()["files"] if f.endswith(".html")]
        assert html
        listed = {r["name"]: r["files"] for r in view.get("/api/reports").json()["reports"]}
        assert set(ran.json()["files"]) <= set(listed["weekly"])
        opened = view.get(f"/reports/weekly/{html[0]}")
        assert opened.status_code == 200 and "<svg" in opened.text
        assert opened.headers.get_list("content-security-policy") == [REPORT_POLICY]
        assert "exec" in opened.text.lower() or "CT-K8S-004" in opened.text
        assert "Run now" in admin.get("/reports").text and "Run now" not in view.get(
            "/reports").text
        # A viewer cannot run one; a scoped user sees none (reports span every namespace).
        assert view.post("/api/reports/weekly/run",
                         headers={"X-CSRF-Token": view.csrf}).status_code == 403  # type: ignore[attr-defined]
        for path in ("/api/reports", "/reports", f"/reports/weekly/{html[0]}", "/api/evidence",
                     "/evidence"):
            assert pay.get(path).status_code == 403, path
        assert "nav-reports" not in pay.get("/alerts").text
        # Only files of the listing are served: no path from the request is followed.
        for name in ("..%2F..%2Fconsole.db", "..%2Fconsole.db", "console.db"):
            assert view.get(f"/reports/weekly/{name}").status_code == 404
        assert view.get("/reports/nope/x.html").status_code == 404
    finally:
        for client in (admin, view, pay):
            client.close()


def test_the_last_evidence_verification_comes_from_the_audit_trail(
        console: tuple[ConsoleServer, Path]) -> None:
    server, root = console
    admin = login(server.url, "admin")
    try:
        assert "None recorded" in admin.get("/evidence").text
        csrf = {"X-CSRF-Token": admin.csrf}  # type: ignore[attr-defined]
        result = admin.post("/api/evidence/verify", headers=csrf, timeout=300).json()
        assert result["ok"] and "manifests" in result["output"]
        # The CLI's record waits in the spool for the next pipeline run to store it.
        ingest(root / "data", write_lines(root / "more.log", incident()[:1]),
               root / "ctrail.yaml")
        last = admin.get("/api/evidence").json()
        assert last["configured"] and last["last_verification"]["ok"] is True
        assert last["last_verification"]["target"] == "store"
        assert "signatures_checked" in admin.get("/evidence").text
        unauthenticated = httpx.post(server.url + "/api/evidence/verify")
        assert unauthenticated.status_code == 401
    finally:
        admin.close()


def test_closing_an_alert_asks_the_notify_stage_to_resolve_its_incident(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PD_KEY", "0123456789abcdef0123456789abcdef")
    ingest(tmp_path / "data", write_lines(tmp_path / "audit.log", incident()))
    add_users(tmp_path / "data")
    config = tmp_path / "ctrail.yaml"
    config.write_text("notify:\n  receivers:\n    oncall: {type: pagerduty, routing_key: "
                      "{env: T_PD_KEY}, url: 'http://127.0.0.1:9/v2/enqueue'}\n")
    server = serve(tmp_path / "data", config)
    admin = login(server.url, "admin")
    try:
        doc = admin.get("/api/alerts", params={"namespace": "payments"}).json()["alerts"][0]
        # As the notify stage left it: the alert's group has an open PagerDuty incident.
        outbox = Outbox(outbox_path(tmp_path / "data"))
        outbox.enqueue([NewRow("oncall", Alert.model_validate(
            {k: v for k, v in doc.items() if k != "triage"}), tracks_incidents=True)], 1.0)
        outbox.mark_delivered("oncall", [p.seq for p in outbox.pending("oncall", 10)], 1.0,
                              "trigger")
        outbox.incident_opened("oncall", doc["alert"]["group_key"], "dedup-1")
        assert outbox.incidents_due("oncall", None, 2.0) == []
        csrf = {"X-CSRF-Token": admin.csrf}  # type: ignore[attr-defined]
        url = f"/api/alerts/{doc['event']['id']}/triage"
        assert admin.post(url, json={"action": "acknowledge"}, headers=csrf).json()[
            "incidents_resolving"] == 0
        closed = admin.post(url, json={"action": "close", "reason": "true_positive"},
                            headers=csrf).json()
        assert closed["incidents_resolving"] == 1
        assert outbox.incidents_due("oncall", None, 2.0) == [(doc["alert"]["group_key"],
                                                              "dedup-1")]
        outbox.close()
    finally:
        admin.close()
        server.stop()
