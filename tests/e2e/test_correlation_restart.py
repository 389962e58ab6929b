"""kill -9 of `ctrail run` in the middle of a correlation window: after a restart the window
goes on from its checkpoint, and CT-COR-003 (10 forbidden responses in 5 minutes) fires once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
USER = "system:serviceaccount:shop:prober"


def forbidden(n: int, start: datetime) -> str:
    when = (start + timedelta(seconds=10 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"7f0c0000-0000-4000-8000-{n:012d}", "stage": "ResponseComplete",
        "requestURI": "/api/v1/nodes", "verb": "list", "user": {"username": USER},
        "sourceIPs": ["10.0.0.9"], "objectRef": {"resource": "nodes", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "reason": "Forbidden",
                           "code": 403},
        "requestReceivedTimestamp": when, "stageTimestamp": when}).decode() + "\n"



def checkpointed(data_dir: Path) -> int:
    """Candidates of CT-COR-003 held in the correlate stage's checkpoint."""
    try:
        state = orjson.loads((data_dir / "detection" / "correlate.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return 0
    return sum(len(entries) for rule, _group, _template, entries in state["windows"]["groups"]
               if rule == "CT-COR-003")


def alerts(data_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    done = subprocess.run([str(EXE), "alerts", "--rule", "CT-COR-003", "--format", "json",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_kill_9_mid_window_then_restart_fires_the_correlation_exactly_once(
        tmp_path: Path) -> None:
    audit_log, data_dir, config = tmp_path / "audit.log", tmp_path / "data", tmp_path / "c.yaml"
    config.write_text(f"sources:\n  apiserver-log: {{type: k8s_audit_file, path: {audit_log}, "
                      "poll_interval_secs: 0.1}\n")
    start = datetime.now(timezone.utc) - timedelta(minutes=2)
    audit_log.write_text("".join(forbidden(n, start) for n in range(6)))
    command = [str(EXE), "run", "--config", str(config), "--data-dir", str(data_dir)]
    first = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: checkpointed(data_dir) == 6)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert alerts(data_dir) == []
    with open(audit_log, "a") as handle:
        handle.write("".join(forbidden(n, start) for n in range(6, 10)))
    second = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(alerts(data_dir)) >= 1)
        time.sleep(2)                               # time for a duplicate to show, if any
        (alert,) = alerts(data_dir)
    finally:
        second.send_signal(signal.SIGTERM)
        _out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert alert["alert"]["count"] == 10 and len(alert["alert"]["event_ids"]) == 10
    assert alert["alert"]["group_key"] == f"CT-COR-003|{USER}"
    assert alert["user"]["name"] == USER
