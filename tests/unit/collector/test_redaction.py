"""Secrets in Kubernetes audit events are hashed before anything is stored.

The real samples that touch Secrets and tokens (Falco's traces, Panther's EKS tests) are all
logged at Metadata level: they name the Secret but carry no value. So the values come from the
same events at RequestResponse level, with the request and response bodies the Kubernetes API
defines (Secret v1, TokenRequest and TokenReview authentication.k8s.io/v1, a Pod's env and args,
a kubeconfig-shaped object), and the test greps every byte `ctrail ingest` left behind.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import PREFIX, Redactor, load_or_create_key
from ctrail.components import RawRecord

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IkRVbTNXIn0.eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bH"
       "Quc3ZjIl0sInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDpwcm9kdWN0aW9uOnBlcnNpc3RlbmNlLXNhIn0"
       ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbg")
SECRETS = {
    "secret data": "c3VwZXJzZWNyZXQtcGFzc3dvcmQ=",
    "secret stringData": "sk-live-51HxQ2eZvKYlo2C",
    "sa token secret": "ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNkluUnZhMlZ1SW4w",
    "token request": JWT,
    "token review": "reviewed-bearer-Zm9vYmFyYmF6cXV4",
    "env password": "db-pass-83kd9Qz",
    "bearer in args": "b3arer-t0ken-in-args-Kq83",
    "kubeconfig client key": "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
    "kubeconfig token": "kubeconfig-token-9f8e7d6c",
    "patch value": "cGF0Y2hlZC1zZWNyZXQ=",
}


def real_line(path: Path, number: int = 1) -> dict[str, Any]:
    return orjson.loads(path.read_bytes().splitlines()[number - 1])


def audit_lines(real: Path) -> list[bytes]:
    traces = real / "falco-k8saudit-traces/trace_files"
    panther = real / "panther-k8s-rule-tests/raw_audit_events_from_tests.jsonl"
    secret = real_line(traces / "create_secret.json")
    sa_secret = real_line(traces / "create_service_account_token_secret.json")
    token = real_line(panther, 142)
    pod = real_line(traces / "create_nginx_pod_privileged.json")
    last_applied = json.dumps({"apiVersion": "v1", "kind": "Secret",
                               "data": {"password": SECRETS["secret data"]}})
    body = {"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
            "metadata": {"name": "example-secret", "namespace": "default",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                         last_applied}},
            "data": {"password": SECRETS["secret data"]},
            "stringData": {"api-key": SECRETS["secret stringData"]}}
    secret_rr = {**secret, "level": "RequestResponse", "requestObject": body,
                 "responseObject": {**body, "stringData": None}}
    sa_rr = {**sa_secret, "level": "RequestResponse", "responseObject": {
        "kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "default-token-7v4pb", "namespace": "test2"},
        "data": {"token": SECRETS["sa token secret"], "namespace": "dGVzdDI="}}}
    token_rr = {**token, "level": "RequestResponse", "stage": "ResponseComplete",
                "requestObject": {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                                  "spec": {"audiences": ["https://kubernetes.default.svc"],
                                           "expirationSeconds": 3600}},
                "responseObject": {"kind": "TokenRequest",
                                   "apiVersion": "authentication.k8s.io/v1",
                                   "status": {"token": SECRETS["token request"],
                                              "expirationTimestamp": "2024-01-01T01:00:00Z"}}}
    review = {**token, "objectRef": {"resource": "tokenreviews",
                                     "apiGroup": "authentication.k8s.io"},
              "level": "Request", "requestObject": {
                  "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                  "spec": {"token": SECRETS["token review"]}}}
    containers = [{"name": "app", "image": "nginx",
                   "args": ["curl", "-H", f"Authorization: Bearer {SECRETS['bearer in args']}"],
                   "env": [{"name": "DB_PASSWORD", "value": SECRETS["env password"]},
                           {"name": "LOG_LEVEL", "value": "debug"}]}]
    pod_rr = {**pod, "requestObject": {**pod.get("requestObject", {}), "kind": "Pod",
                                       "spec": {"containers": containers}}}
    kubeconfig = {**secret, "objectRef": {"resource": "clusterconfigs", "apiGroup": "example.io"},
                  "level": "Request", "requestObject": {
                      "kind": "ClusterConfig", "apiVersion": "example.io/v1",
                      "users": [{"name": "admin", "user": {
                          "client-key-data": SECRETS["kubeconfig client key"],
                          "token": SECRETS["kubeconfig token"]}}]}}
    patch = {**secret, "verb": "patch", "level": "Request", "requestObject": [
        {"op": "replace", "path": "/data/password", "value": SECRETS["patch value"]}]}
    derived = [secret_rr, sa_rr, token_rr, review, pod_rr, kubeconfig, patch]
    real_files = [traces / "create_secret.json", traces / "create_kube_system_secret.json",
                  traces / "create_service_account_token_secret.json",
                  traces / "delete_secret.json"]
    return ([line for p in real_files for line in p.read_bytes().splitlines() if line.strip()]
            + panther.read_bytes().splitlines()[11:12] + panther.read_bytes().splitlines()[141:147]
            + [orjson.dumps(d) for d in derived])


def test_every_secret_value_is_hashed_and_tagged(real_data: Path) -> None:
    parser = K8sAuditParser(Redactor(b"k" * 32))
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    events = [e for n, line in enumerate(audit_lines(real_data), 1)
              for e in parser.parse(RawRecord(line, f"a:{n}", now))]
    stored = b"\n".join(e.model_dump_json(by_alias=True).encode() for e in events)
    for what, value in SECRETS.items():
        assert value.encode() not in stored, what
    redacted = [e for e in events if "redacted" in e.tags]
    assert len(redacted) == 7
    assert all(PREFIX in e.event.original for e in redacted)
    assert [e.event.original.encode() for e in events if e not in redacted] == [
        line for line in audit_lines(real_data)[:len(events) - 7]]      # untouched: as read
    env = redacted[4].kubernetes.audit["requestObject"]["spec"]["containers"][0]["env"]  # type: ignore[index, union-attr]
    assert env[1] == {"name": "LOG_LEVEL", "value": "debug"}


def test_equal_values_hash_equal_under_one_key_and_differ_under_another() -> None:
    one, other = Redactor(b"a" * 32), Redactor(b"b" * 32)
    assert one.digest("s3cret") == one.digest("s3cret") != other.digest("s3cret")
    assert one.digest("s3cret").startswith("hmac-sha256:") and len(one.digest("x")) == 12 + 64


def test_the_generated_key_is_kept_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "redaction.key")
    assert load_or_create_key(tmp_path / "redaction.key") == key and len(key) == 64
    assert stat.S_IMODE((tmp_path / "redaction.key").stat().st_mode) == 0o600


def test_ctrail_ingest_stores_no_secret_anywhere(tmp_path: Path, real_data: Path) -> None:
    audit = tmp_path / "audit.log"
    audit.write_bytes(b"\n".join(audit_lines(real_data)) + b"\n")
    data = tmp_path / "data"
    exe = Path(sys.executable).with_name("ctrail")
    # The console script as a user runs it, at debug level, with the embedded defaults.
    done = subprocess.run([str(exe), "-v", "ingest", "--source", "k8s-audit", str(audit),
                           "--data-dir", str(data)], capture_output=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"0 dead-lettered" in done.stdout
    everything = b"".join(p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file())
    assert len(everything) > 10_000
    for what, value in SECRETS.items():
        assert value.encode() not in everything, f"{what} stored"
        assert value.encode() not in done.stderr + done.stdout, f"{what} logged"
    key = (data / "redaction.key").read_bytes().strip()
    assert stat.S_IMODE((data / "redaction.key").stat().st_mode) == 0o600
    # Equality still works: the stored hash is the one the key gives for the value.
    assert Redactor(key).digest(SECRETS["token request"]).encode() in everything
