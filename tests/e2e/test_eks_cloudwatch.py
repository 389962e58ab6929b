"""EKS audit logs from CloudWatch Logs (source `cloudwatch_logs`), against moto's server mode
speaking the CloudWatch Logs API: the audit streams of `/aws/eks/<cluster>/cluster` are read
(the authenticator's are not), positions survive a restart without loss or duplicates, a batch
not committed is read again, and `ctrail run` stores what EKS wrote."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from collector.sources.cloudwatch_logs import CloudWatchLogsConfig, CloudWatchLogsSource
from ctrail.components import RawRecord
from tests.ctrail_process import ctrail_running, json_lines
from tests.waiting import wait_for

GROUP_OF = "/aws/eks/{}/cluster"
KEYS = {"TEST_AWS_KEY_ID": "AKIDEKSAUDIT", "TEST_AWS_SECRET": "eks-audit-secret"}
# Event times in milliseconds, rising as the API server's do (CloudWatch orders by them).
CLOCK = itertools.count(int(time.time() * 1000))


@pytest.fixture
def cluster(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """A fresh EKS log group with two audit streams and the authenticator's stream."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    logs = boto3.client("logs", endpoint_url=moto_endpoint, region_name="eu-west-1",
                        aws_access_key_id=KEYS["TEST_AWS_KEY_ID"],
                        aws_secret_access_key=KEYS["TEST_AWS_SECRET"])
    group = GROUP_OF.format(f"prod-{uuid.uuid4().hex[:8]}")
    logs.create_log_group(logGroupName=group)
    for stream in ("kube-apiserver-audit-0a1b", "kube-apiserver-audit-9f8e", "authenticator-77"):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    return group, logs


def audit_line(audit_id: str, user: str = "alice") -> str:
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                       "auditID": audit_id, "stage": "ResponseComplete", "verb": "get",
                       "requestURI": "/api/v1/namespaces/default/secrets/db",
                       "user": {"username": user}, "objectRef": {
                           "resource": "secrets", "namespace": "default", "name": "db"},
                       "responseStatus": {"code": 200},
                       "requestReceivedTimestamp": "2026-12-07T06:00:00.000000Z",
                       "stageTimestamp": "2026-12-07T06:00:00.100000Z"})


def put(logs: Any, group: str, stream: str, messages: list[str]) -> None:
    for start in range(0, len(messages), 500):
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": next(CLOCK), "message": m} for m in messages[start:start + 500]])


def source(endpoint: str, group: str, checkpoint: Path) -> CloudWatchLogsSource:
    config = CloudWatchLogsConfig.model_validate({
        "log_group": group, "region": "eu-west-1", "endpoint_url": endpoint,
        "access_key_id": {"env": "TEST_AWS_KEY_ID"},
        "secret_access_key": {"env": "TEST_AWS_SECRET"}, "poll_interval_secs": 0.05})
    return config.build("eks", checkpoint, 1024 * 1024)


def drain(src: CloudWatchLogsSource, commit: bool = True, idle_reads: int = 4) -> list[RawRecord]:
    """Read until `idle_reads` reads in a row find nothing, committing each batch."""
    records: list[RawRecord] = []
    idle = 0
    while idle < idle_reads:
        batch = src.read(700)
        idle = 0 if batch else idle + 1
        if batch and commit:
            src.commit(batch)
        records.extend(batch)
    return records


def ids(records: list[RawRecord]) -> list[str]:
    return [json.loads(r.data)["auditID"] for r in records]


def test_audit_streams_are_read_resumed_after_restart_and_never_twice(
        moto_endpoint: str, cluster: tuple[str, Any], tmp_path: Path) -> None:
    group, logs = cluster
    first = [audit_line(f"a-{i}") for i in range(1500)]          # more than one page
    put(logs, group, "kube-apiserver-audit-0a1b", first)
    put(logs, group, "kube-apiserver-audit-9f8e", [audit_line("b-0")])
    put(logs, group, "authenticator-77", ["time=... msg=access granted"])
    src = source(moto_endpoint, group, tmp_path)
    records = drain(src)
    assert sorted(ids(records)) == sorted([f"a-{i}" for i in range(1500)] + ["b-0"])
    by_stream = [r for r in records if r.stream == "kube-apiserver-audit-0a1b"]
    assert ids(by_stream) == [f"a-{i}" for i in range(1500)]      # in order, per stream
    src.close()

    put(logs, group, "kube-apiserver-audit-0a1b", [audit_line("a-1500")])
    put(logs, group, "kube-apiserver-audit-9f8e", [audit_line("b-1"), audit_line("b-2")])
    restarted = source(moto_endpoint, group, tmp_path)
    assert sorted(ids(drain(restarted))) == ["a-1500", "b-1", "b-2"]
    restarted.close()
    assert drain(source(moto_endpoint, group, tmp_path)) == []     # nothing twice


def test_a_batch_not_committed_is_read_again_and_a_restart_mid_page_resumes_there(
        moto_endpoint: str, cluster: tuple[str, Any], tmp_path: Path) -> None:
    group, logs = cluster
    put(logs, group, "kube-apiserver-audit-0a1b", [audit_line(f"c-{i}") for i in range(30)])
    src = source(moto_endpoint, group, tmp_path)
    batch = wait_read(src, 10)
    assert ids(batch) == [f"c-{i}" for i in range(10)]
    again = src.read(10)                              # not committed: the same records again
    assert ids(again) == ids(batch)
    src.commit(again)
    src.close()
    # A restart within the page: the committed 10 are skipped, the other 20 come.
    restarted = source(moto_endpoint, group, tmp_path)
    assert ids(drain(restarted)) == [f"c-{i}" for i in range(10, 30)]


def wait_read(src: CloudWatchLogsSource, n: int) -> list[RawRecord]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = src.read(n)
        if batch:
            return batch
    raise AssertionError("no records")


def test_a_missing_log_group_is_retried_not_fatal(
        moto_endpoint: str, cluster: tuple[str, Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    src = source(moto_endpoint, GROUP_OF.format("not-yet"), tmp_path)
    assert drain(src, idle_reads=2) == []
    assert "Cannot list the CloudWatch log streams; retrying." in caplog.text


def test_ctrail_run_stores_what_eks_wrote(moto_endpoint: str, cluster: tuple[str, Any],
                                          tmp_path: Path) -> None:
    group, logs = cluster
    put(logs, group, "kube-apiserver-audit-0a1b",
        [audit_line(f"r-{i}", user="eks-admin") for i in range(50)])
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"""
sources:
  eks-prod:
    type: cloudwatch_logs
    log_group: {group}
    region: eu-west-1
    endpoint_url: {moto_endpoint}
    access_key_id: {{env: TEST_AWS_KEY_ID}}
    secret_access_key: {{env: TEST_AWS_SECRET}}
    poll_interval_secs: 0.2
""")
    data_dir = tmp_path / "data"

    def count() -> int:
        return json_lines(config, data_dir, "search", "user.name:eks-admin", "--limit", "1000")

    with ctrail_running(config, data_dir, {**os.environ, **KEYS}):
        wait_for(lambda: count() == 50, timeout=60)
    assert count() == 50
