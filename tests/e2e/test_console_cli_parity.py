"""The console and the CLI give the same answers on the same data: search, alerts and
timelines, compared document for document (an unscoped admin; the console adds only the
alerts' triage state)."""

from __future__ import annotations

from typing import Any, Iterator

import orjson
import pytest

from console_scenario import (
    SCRIPT_USER,
    elasticsearch_store,
    incident_console,
    login,
)
from ctrail.cli.main import main
from ctrail.console.app import ConsoleServer
from tests.services import elasticsearch_url

QUERIES = ["*", "kubernetes.namespace:payments", "NOT kubernetes.namespace:payments",
           "exec", "alice", "user.name:b*", "_exists_:kubernetes.pod.name",
           "event.action:create AND NOT kubernetes.namespace:shop", '"cluster-admin"',
           "event.dataset:containertrail.audit"]         # our own records, when asked for


@pytest.fixture(scope="module", params=["sqlite", pytest.param("elasticsearch",
                                                                marks=pytest.mark.integration)])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ConsoleServer, list[str]]]:
    root = tmp_path_factory.mktemp("parity")
    config = (elasticsearch_store(root / "es.yaml", elasticsearch_url(), "p")
              if request.param == "elasticsearch" else None)
    server = incident_console(root, config)
    yield server, ["--data-dir", str(root / "data"), *(["--config", str(config)] if config
                                                         else [])]
    server.stop()


def cli_json(capsys: pytest.CaptureFixture[str], where: list[str], *args: str) -> list[Any]:
    capsys.readouterr()
    assert main([*args, "--format", "json", *where]) == 0
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_search_alerts_and_timelines_answer_as_the_cli(
        setup: tuple[ConsoleServer, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    server, data_dir = setup
    admin = login(server.url, "admin")
    try:
        for query in QUERIES:
            cli = cli_json(capsys, data_dir, "search", query, "--limit", "1000")
            api = admin.get("/api/search", params={"q": query, "limit": 1000}).json()["events"]
            assert api == cli, query
        assert len(cli_json(capsys, data_dir, "search", "*", "--limit", "1000")) == 7   # lines
        cli_alerts = cli_json(capsys, data_dir, "alerts")
        api_alerts = admin.get("/api/alerts", params={"limit": 1000}).json()["alerts"]
        assert [{k: v for k, v in a.items() if k != "triage"} for a in api_alerts] == cli_alerts
        assert len(cli_alerts) == 3
        grouped = admin.get("/api/alerts", params={"group": "true"}).json()["alerts"]
        assert sorted(a["group"]["key"] for a in grouped) == sorted(
            {a["alert"]["group_key"] for a in cli_alerts})
        assert "alerts in group" in admin.get("/alerts", params={"group": "1"}).text
        rule = cli_json(capsys, data_dir, "alerts", "--rule", "CT-K8S-004")
        assert admin.get("/api/alerts", params={"rule": "CT-K8S-004"}).json()["alerts"] and \
            len(rule) == admin.get("/api/alerts", params={"rule": "CT-K8S-004"}).json()["count"]
        for kind, value in (("user", "alice"), ("pod", "payments/checkout-1"),
                            ("user", SCRIPT_USER)):
            subject, *events = cli_json(capsys, data_dir, "timeline", f"--{kind}", value)
            api = admin.get("/api/timeline", params={"kind": kind, "value": value}).json()
            assert api["subject"] == subject["subject"], value
            assert api["events"] == events and events, value
        export = admin.get("/api/export", params={"q": "exec", "format": "jsonl"}).content
        assert [orjson.loads(line) for line in export.splitlines()] == cli_json(
            capsys, data_dir, "search", "exec")
    finally:
        admin.close()
