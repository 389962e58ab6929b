"""Scope enforcement on both stores: a responder limited to namespace `payments` never sees an
event, alert, timeline row, suggestion or export row of another namespace, whatever the query.
The scope is ANDed into the parsed query on the server, so these queries are asked of the store
itself (SQLite here; the real Elasticsearch under the integration marker)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from console_scenario import (
    SCRIPT_USER,
    add_users,
    elasticsearch_store,
    incident,
    incident_console,
    ingest,
    login,
    serve,
    write_lines,
)
from ctrail.console.app import ConsoleServer
from tests.services import elasticsearch_url

# Queries that try every way around a namespace filter.
ESCAPES = [
    "*", "*:*", "", "NOT kubernetes.namespace:payments", "kubernetes.namespace:shop",
    "kubernetes.namespace:payments*", "kubernetes.namespace:*", "_exists_:kubernetes.namespace",
    "NOT _exists_:kubernetes.namespace", "kubernetes.namespace:/.*/", "alice", "bob", "ledger*",
    "exec", '"cluster-admin"', "kubernetes.namespace:payments OR kubernetes.namespace:shop",
    "(kubernetes.namespace:payments) OR NOT (kubernetes.namespace:payments)",
    "user.name:* OR NOT user.name:*", f'user.name:"{SCRIPT_USER}"',
    "orchestrator.resource.type:clusterrolebindings", "event.dataset:containertrail.audit",
]


def namespaces_of(docs: list[dict[str, Any]]) -> set[Any]:
    return {(d.get("kubernetes") or {}).get("namespace") for d in docs}


def histogram_total(page: str) -> int:
    """The sum of the search page's histogram bars (each bar's <title> is `label: count`)."""
    figure = page.split('<figure class="chart" id="histogram">', 1)[1].split("</figure>", 1)[0]
    return sum(int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title>", figure))


def check_scope(server: ConsoleServer) -> None:
    admin, pay = login(server.url, "admin"), login(server.url, "pay")
    try:
        everything = admin.get("/api/search", params={"q": "*", "limit": 1000}).json()["events"]
        assert {"payments", "shop", "payments-archive", None} <= namespaces_of(everything)
        seen_payments = 0
        for query in ESCAPES:
            events = pay.get("/api/search", params={"q": query, "limit": 1000}).json()["events"]
            assert namespaces_of(events) <= {"payments"}, query
            seen_payments += len(events)
            alerts = pay.get("/api/alerts", params={"q": query or "*"}).json()["alerts"]
            assert namespaces_of(alerts) <= {"payments"}, query
            export = pay.get("/api/export", params={"q": query, "format": "jsonl"}).content
            rows = [orjson.loads(line) for line in export.splitlines()]
            assert namespaces_of(rows) <= {"payments"}, query
            csv_rows = pay.get("/api/export", params={"q": query, "format": "csv"}).text
            assert "shop" not in csv_rows and "payments-archive" not in csv_rows, query
        assert seen_payments > 0                          # the scope lets payments through
        pay_alerts = pay.get("/api/alerts").json()["alerts"]
        assert [a["kubernetes"]["namespace"] for a in pay_alerts] == ["payments"]
        # Filters and ids do not reach outside either.
        assert pay.get("/api/alerts", params={"namespace": "shop"}).json()["count"] == 0
        others = [e for e in everything if namespaces_of([e]) != {"payments"}]
        for doc in others:
            assert pay.get(f"/api/events/{doc['event']['id']}").status_code == 404
            assert pay.get(f"/events/{doc['event']['id']}").status_code == 404
        other_alerts = [a for a in admin.get("/api/alerts").json()["alerts"]
                        if a["kubernetes"]["namespace"] != "payments"]
        assert other_alerts
        for alert in other_alerts:
            alert_id = alert["event"]["id"]
            assert pay.get(f"/api/alerts/{alert_id}").status_code == 404
            refused = pay.post(f"/api/alerts/{alert_id}/triage", json={"action": "acknowledge"},
                               headers={"X-CSRF-Token": pay.csrf})  # type: ignore[attr-defined]
            assert refused.status_code == 404
        # Timelines: rows of the subject inside the scope only; cards of others withheld.
        for kind, value in (("user", "alice"), ("user", "bob"), ("user", SCRIPT_USER),
                            ("pod", "shop/x"), ("pod", "payments-archive/ledger-0"),
                            ("pod", "payments/checkout-1")):
            answer = pay.get("/api/timeline", params={"kind": kind, "value": value}).json()
            assert namespaces_of(answer["events"]) <= {"payments"}, value
            if not value.startswith("payments/"):
                assert set(answer["subject"]) <= {"type", "query", "limited_to_scope"}
        alice = pay.get("/api/timeline", params={"kind": "user", "value": "alice"}).json()
        assert alice["events"] and namespaces_of(alice["events"]) == {"payments"}
        # Suggestions come from the events in scope: no field only other tenants' events have.
        fields = pay.get("/api/suggest", params={"prefix": "kubernetes.labels"}).json()["fields"]
        assert "kubernetes.labels.evil" not in fields and "kubernetes.labels.app" in fields
        all_fields = admin.get("/api/suggest", params={"prefix": "kubernetes.labels"}).json()
        assert "kubernetes.labels.evil" in all_fields["fields"]
        # A page says the same as the API.
        page = pay.get("/search", params={"q": "NOT kubernetes.namespace:payments"}).text
        assert "shop" not in page and "ledger" not in page
        # The histogram is counted by the store within the scope too.
        hits = pay.get("/api/search", params={"q": "*", "limit": 1000}).json()["count"]
        assert histogram_total(pay.get("/search", params={"q": "*"}).text) == hits
        assert histogram_total(admin.get("/search", params={"q": "*"}).text) == len(everything)
    finally:
        admin.close()
        pay.close()


@pytest.fixture(scope="module")
def sqlite_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    server = incident_console(tmp_path_factory.mktemp("scopes"))
    yield server
    server.stop()


def test_a_payments_responder_sees_only_payments_on_sqlite(sqlite_console: ConsoleServer) -> None:
    check_scope(sqlite_console)


def test_a_cluster_scope_hides_rows_without_that_cluster(sqlite_console: ConsoleServer) -> None:
    from ctrail.console.users import ConsoleDb, Role, User
    db = ConsoleDb(sqlite_console.db.path.parent)
    db.update_user(User("view", Role.VIEWER, (), ("prod-eu",)))
    db.close()
    view = login(sqlite_console.url, "view")
    try:
        # The events name no cluster (orchestrator.cluster.name): none is in prod-eu.
        assert view.get("/api/search", params={"q": "*"}).json()["count"] == 0
        assert view.get("/api/alerts").json()["count"] == 0
    finally:
        view.close()


@pytest.mark.integration
def test_a_payments_responder_sees_only_payments_on_elasticsearch(tmp_path: Path) -> None:
    try:
        httpx.get(elasticsearch_url(), timeout=5)
    except httpx.HTTPError:
        pytest.fail(f"no Elasticsearch at {elasticsearch_url()}: eval \"$(scripts/services up)\"")
    server = incident_console(tmp_path, elasticsearch_store(tmp_path / "es.yaml",
                                                            elasticsearch_url(), "c"))
    try:
        assert server.store.__class__.__name__ == "ElasticsearchStore"
        check_scope(server)
    finally:
        server.stop()


def test_the_live_alert_stream_is_scoped_too(tmp_path: Path) -> None:
    from console_scenario import exec_into
    ingest(tmp_path / "data", write_lines(tmp_path / "audit.log", incident()[:1]))
    add_users(tmp_path / "data")
    server = serve(tmp_path / "data", live_poll_secs=0.2)
    pay = login(server.url, "pay")
    received: list[dict[str, Any]] = []
    try:
        # Reads wait at most 3 s: once the alerts are in, a quiet stream ends the test.
        timeout = httpx.Timeout(30, read=3)
        with pay.stream("GET", "/api/alerts/stream", timeout=timeout) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            now = datetime.now(timezone.utc)
            late = [exec_into(now, "mallory", "shop", "web-1", tag="s"),
                    exec_into(now, "mallory", "payments", "checkout-1", tag="p"),
                    exec_into(now, "mallory", "payments-archive", "ledger-0", tag="a")]
            ingest(tmp_path / "data", write_lines(tmp_path / "late.log", late))
            try:
                for line in lines:
                    if line.startswith("data: "):
                        received.append(orjson.loads(line[6:]))
            except httpx.ReadTimeout:
                pass
        admin = login(server.url, "admin")
        assert admin.get("/api/alerts").json()["count"] == 3     # all three were raised
        admin.close()
    finally:
        pay.close()
        server.stop()
    assert [a["kubernetes"]["namespace"] for a in received] == ["payments"]
