"""`ctrail run` as a user starts it: a tailed audit log and the audit webhook, stored live."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EVENT = ('{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}","verb":"get",'
         '"stage":"ResponseComplete","requestReceivedTimestamp":"2026-05-01T00:00:00Z",'
         '"user":{{"username":"{user}"}}}}')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def search_count(exe: Path, data_dir: Path, query: str) -> int:
    if not data_dir.exists():               # ctrail run has not made it yet (search says so)
        return 0
    done = subprocess.run([str(exe), "search", query, "--data-dir", str(data_dir), "--format",
                           "json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def post(port: int, body: bytes, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/", body=body, headers={"Authorization": f"Bearer {token}"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_run_follows_the_audit_log_and_serves_the_webhook(tmp_path: Path) -> None:
    audit_log, data_dir, port, ops_port = (tmp_path / "audit.log", tmp_path / "data",
                                           free_port(), free_port())
    audit_log.write_text(EVENT.format(id="f1", user="tailed-user") + "\n")
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, poll_interval_secs: 0.1}}
  apiserver-webhook: {{type: k8s_audit_webhook, port: {port}, token: {{env: TEST_HOOK_TOKEN}}}}
ops: {{port: {ops_port}, token: {{env: TEST_OPS_TOKEN}}}}
""")
    exe = Path(sys.executable).with_name("ctrail")
    env = {**os.environ, "TEST_HOOK_TOKEN": "hook-token-1", "TEST_OPS_TOKEN": "ops-token-1"}
    proc = subprocess.Popen([str(exe), "run", "--config", str(config), "--data-dir", str(data_dir)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: search_count(exe, data_dir, "user.name:tailed-user") == 1)
        with open(audit_log, "a") as handle:
            handle.write(EVENT.format(id="f2", user="tailed-user") + "\n")
        wait_for(lambda: search_count(exe, data_dir, "user.name:tailed-user") == 2)
        body = ('{"kind":"EventList","items":[' + EVENT.format(id="w1", user="hooked-user") + "]}")
        wait_for(lambda: _port_open(port))
        assert post(port, body.encode(), "wrong-token") == 401
        assert post(port, body.encode(), "hook-token-1") == 200
        wait_for(lambda: search_count(exe, data_dir, "user.name:hooked-user") == 1)
        health = subprocess.run([str(exe), "health", "--data-dir", str(data_dir)],
                                capture_output=True, text=True, cwd=REPO)
        assert (health.returncode, health.stdout.strip()) == (0, "healthy: run")
        assert ops_get(ops_port, "/readyz") == (200, "ready\n")
        status, metrics = ops_get(ops_port, "/metrics")
        stored = re.search(r'ctrail_stage_received_total\{stage="process"\} (\d+)', metrics)
        assert status == 200 and stored and int(stored.group(1)) >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "hook-token-1" not in err
    stopped = subprocess.run([str(exe), "health", "--data-dir", str(data_dir)],
                             capture_output=True, text=True, cwd=REPO)
    assert stopped.returncode == 1 and stopped.stdout.startswith("unhealthy")


def ops_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Authorization": "Bearer ops-token-1"})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
