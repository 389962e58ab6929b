"""/healthz, /readyz and /metrics: authenticated, and saying what the stages do."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Iterator

import pytest

from ctrail.errors import ConfigError
from ctrail.runtime.ops import OpsConfig, OpsServer
from ctrail.runtime.telemetry import Sample, Telemetry
from ctrail.secrets import EnvRef


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpsServer, Telemetry, list[bool]]]:
    monkeypatch.setenv("TEST_OPS_TOKEN", "ops-token-1")
    telemetry, alive = Telemetry(), [True]
    server = OpsConfig(port=0, token=EnvRef(env="TEST_OPS_TOKEN")).build(telemetry,
                                                                          lambda: alive[0])
    yield server, telemetry, alive
    server.close()


def get(server: OpsServer, path: str, token: str | None = "ops-token-1") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def test_every_endpoint_needs_the_token(served) -> None:  # type: ignore[no-untyped-def]
    server, _telemetry, _alive = served
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(server, path, token=None)[0] == 401
        assert get(server, path, token="wrong")[0] == 401


def test_health_and_readiness_follow_threads_and_failing_stages(served) -> None:  # type: ignore[no-untyped-def]
    server, telemetry, alive = served
    assert get(server, "/healthz") == (200, "ok\n")
    assert get(server, "/readyz") == (200, "ready\n")
    telemetry.set_failing("store", True)                     # e.g. Elasticsearch is down
    assert get(server, "/readyz") == (503, "not ready: store\n")
    assert get(server, "/healthz")[0] == 200                 # alive: do not restart it
    telemetry.set_failing("store", False)
    alive[0] = False
    assert get(server, "/healthz")[0] == 503


def test_metrics_are_prometheus_text_with_counters_and_lag(served) -> None:  # type: ignore[no-untyped-def]
    server, telemetry, _alive = served
    telemetry.record("enrich", received=10, sent=9, dead_lettered=1)
    telemetry.record("store", received=9, retries=2)
    telemetry.set_lag("store", 42)
    status, text = get(server, "/metrics")
    assert status == 200
    assert 'ctrail_stage_received_total{stage="enrich"} 10' in text
    assert 'ctrail_stage_dead_lettered_total{stage="enrich"} 1' in text
    assert 'ctrail_stage_retries_total{stage="store"} 2' in text
    assert 'ctrail_consumer_lag{stage="store"} 42' in text
    assert "# TYPE ctrail_stage_sent_total counter" in text


def test_without_a_token_it_refuses_to_start_unless_told() -> None:
    with pytest.raises(ConfigError, match="token"):
        OpsConfig(port=0).build(Telemetry(), lambda: True)
    open_server = OpsConfig(port=0, allow_unauthenticated=True).build(Telemetry(), lambda: True)
    try:
        assert get(open_server, "/healthz", token=None)[0] == 200
    finally:
        open_server.close()


def test_alert_counts_and_component_samples_are_served(served) -> None:  # type: ignore[no-untyped-def]
    server, telemetry, _alive = served
    telemetry.count_alerts([("CT-K8S-004", "high"), ("CT-K8S-004", "high"), ("x", "low")])
    telemetry.add_source(lambda: [
        Sample("notify_outbox_items", "gauge", "alerts in the outbox", 3,
               {"receiver": 'chat "ops"\\', "state": "pending"}),
        Sample("notify_outbox_items", "gauge", "alerts in the outbox", 5,
               {"receiver": "pager", "state": "delivered"})])
    status, text = get(server, "/metrics")
    assert status == 200
    assert 'ctrail_alerts_total{rule="CT-K8S-004",severity="high"} 2' in text
    assert 'ctrail_alerts_total{rule="x",severity="low"} 1' in text
    # One HELP and TYPE per metric name, and label values escaped as the format says.
    assert text.count("# TYPE ctrail_notify_outbox_items gauge") == 1
    assert 'ctrail_notify_outbox_items{receiver="chat \\"ops\\"\\\\",state="pending"} 3' in text
    assert 'ctrail_notify_outbox_items{receiver="pager",state="delivered"} 5' in text


def test_health_endpoint_probe_sends_the_configured_token(  # type: ignore[no-untyped-def]
        served, tmp_path, capsys) -> None:
    from ctrail.cli.main import main

    server, _telemetry, alive = served
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {tmp_path}\nops: {{host: 0.0.0.0, port: {server.port}, "
                      "token: {env: TEST_OPS_TOKEN}}\n")
    assert main(["health", "--endpoint", "healthz", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "healthy: /healthz answered 200"
    alive[0] = False
    assert main(["health", "--endpoint", "healthz", "--config", str(config)]) == 1
    assert capsys.readouterr().out.strip() == "unhealthy: /healthz answered 503"
    server.close()
    assert main(["health", "--endpoint", "readyz", "--config", str(config)]) == 1
    assert "unhealthy: /readyz did not answer" in capsys.readouterr().out
    config.write_text(f"data_dir: {tmp_path}\n")
    assert main(["health", "--endpoint", "readyz", "--config", str(config)]) == 2


def test_a_half_open_request_does_not_hold_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPS_TOKEN", "ops-token-1")
    server = OpsConfig(port=0, token=EnvRef(env="TEST_OPS_TOKEN"), read_timeout_secs=0.5
                       ).build(Telemetry(), lambda: True)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")      # and never the end
            started = time.monotonic()
            assert sock.recv(4096) == b""                             # closed by the server
            assert time.monotonic() - started < 3
    finally:
        server.close()
