"""Notifications as a user runs them: `ctrail run` killed with -9 while the receivers are down
delivers every alert, once, after the restart; /metrics shows the backlog and the deliveries;
and no secret reaches a log line or a file."""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "sinks"))
from receivers import PagerDutyReceiver, SlackReceiver, WebhookReceiver  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from test_run import free_port  # noqa: E402

SLACK_PATH = "/services/T0E2E/B0E2E/slack-secret-path-e2e"
HOOK_TOKEN = "hook-url-token-e2e"
PODS = ["web-1", "web-2", "db-0", "cache-0"]


def exec_event(i: int) -> str:
    pod = PODS[i % len(PODS)]
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"e2e-notify-{i:04d}", "stage": "ResponseStarted",
        "requestURI": f"/api/v1/namespaces/shop/pods/{pod}/exec?command=sh&container=app"
                      "&stdin=true&stdout=true&tty=true",
        "verb": "create", "user": {"username": "mallory@example.com", "groups": ["dev"]},
        "sourceIPs": ["203.0.113.9"], "userAgent": "kubectl/v1.29.3",
        "objectRef": {"resource": "pods", "namespace": "shop", "name": pod, "apiVersion": "v1",
                      "subresource": "exec"},
        "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": f"2026-05-01T10:00:{i:02d}.000000Z",
        "stageTimestamp": f"2026-05-01T10:00:{i:02d}.100000Z"}).decode()



def metrics(port: int) -> dict[tuple[str, str], float]:
    """/metrics as {(name, labels): value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": "Bearer ops-token-1"})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    assert response.status == 200
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            found[name, labels.rstrip("}")] = float(value)
    return found


def outbox_counts(data_dir: Path) -> dict[str, int]:
    path = data_dir / "notify" / "outbox.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def run_config(tmp_path: Path, audit_log: Path, receivers: str, ops_port: int) -> Path:
    """ctrail.yaml: the audit log as the one source, `receivers` (YAML entries of
    notify.receivers, indented four spaces), retries fast enough for a test, and /metrics."""
    entries = receivers.strip("\n")
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
notify:
  receivers:
{entries}
  delivery: {{initial_backoff_secs: 0.2, max_backoff_secs: 1, breaker_reset_secs: 1,
             poll_interval_secs: 0.2}}
ops: {{port: {ops_port}, token: {{env: E2E_OPS_TOKEN}}}}
""")
    return config


def assert_no_secret_written(secrets: list[str], logs: list[Path], data_dir: Path) -> None:
    """The outage was logged (in the first run's log), without a secret: in no log line and
    in no file of the data directory."""
    texts = [path.read_bytes() for path in logs]
    texts += [path.read_bytes() for path in data_dir.rglob("*") if path.is_file()]
    assert "Delivery failed" in logs[0].read_text()
    for secret in secrets:
        assert not any(secret.encode() in text for text in texts), secret


def test_kill_9_with_undelivered_alerts_delivers_them_once_after_restart(tmp_path: Path) -> None:
    down = lambda _now: (503, {})  # noqa: E731
    slack, pd, hook = SlackReceiver(fault=down), PagerDutyReceiver(fault=down), \
        WebhookReceiver(fault=down)
    audit_log, data_dir, ops_port = tmp_path / "audit.log", tmp_path / "data", free_port()
    alerts = 12
    audit_log.write_text("".join(exec_event(i) + "\n" for i in range(alerts)))
    config = run_config(tmp_path, audit_log, f"""
    chat: {{type: slack, webhook_url: {{env: E2E_SLACK_URL}}}}
    oncall: {{type: pagerduty, routing_key: {{env: E2E_PD_KEY}}, url: "{pd.base}/v2/enqueue"}}
    siem: {{type: webhook, url: {{env: E2E_HOOK_URL}}, signing_secret: {{env: E2E_HOOK_SECRET}}}}
""", ops_port)
    env = {**os.environ, "E2E_SLACK_URL": slack.base + SLACK_PATH, "E2E_PD_KEY": pd.routing_key,
           "E2E_HOOK_URL": f"{hook.base}/in?token={HOOK_TOKEN}",
           "E2E_HOOK_SECRET": hook.secret.decode(), "E2E_OPS_TOKEN": "ops-token-1"}
    exe = Path(sys.executable).with_name("ctrail")
    command = [str(exe), "run", "--config", str(config), "--data-dir", str(data_dir)]
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    try:
        with open(logs[0], "w") as log:
            first = subprocess.Popen(command, cwd=REPO, env=env, stderr=log)
            wait_for(lambda: outbox_counts(data_dir).get("pending") == 3 * alerts)
            wait_for(lambda: all(r.refused for r in (slack, pd, hook)))
            down_metrics = metrics(ops_port)
            first.kill()                                          # kill -9
            first.wait(timeout=30)
        assert outbox_counts(data_dir) == {"pending": 3 * alerts}
        assert not (slack.accepted or pd.accepted or hook.accepted)
        for receiver in (slack, pd, hook):
            receiver.fault = None
        with open(logs[1], "w") as log:
            second = subprocess.Popen(command, cwd=REPO, env=env, stderr=log)
            wait_for(lambda: outbox_counts(data_dir) == {"delivered": 3 * alerts})
            time.sleep(1.0)                                       # anything extra would show
            up_metrics = metrics(ops_port)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        for receiver in (slack, pd, hook):
            receiver.close()
    ids = hook.alert_ids()
    assert len(ids) == len(set(ids)) == alerts
    # /metrics told the on-call what was going on: alerts raised, held back, then delivered.
    assert sum(n for (name, labels), n in down_metrics.items()
               if name == "ctrail_alerts_total" and 'rule="CT-K8S-004"' in labels) == alerts
    for receiver in ("chat", "oncall", "siem"):
        assert down_metrics["ctrail_notify_outbox_items",
                            f'receiver="{receiver}",state="pending"'] == alerts
        assert up_metrics["ctrail_notify_outbox_items",
                          f'receiver="{receiver}",state="delivered"'] == alerts
        assert up_metrics["ctrail_notify_circuit_open", f'receiver="{receiver}"'] == 0
    assert up_metrics["ctrail_notify_sent_total", 'kind="alert",receiver="siem"'] == alerts
    assert slack.alerts_covered() == alerts
    assert pd.created == len(PODS)
    assert not (slack.problems or pd.problems or hook.problems)
    assert_no_secret_written([SLACK_PATH.rsplit("/", 1)[1], pd.routing_key, HOOK_TOKEN,
                              hook.secret.decode()], logs, data_dir)
