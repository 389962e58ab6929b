"""Secrets in Kubernetes audit events are hashed before anything is stored.

The real samples that touch Secrets and tokens (Falco's traces, Panther's EKS tests) are all
logged at Metadata level: they name the Secret but carry no value. So the values come from the
same events at RequestResponse level, with the request and response bodies the Kubernetes API
defines (Secret v1, TokenRequest and TokenReview authentication.k8s.io/v1, a Pod's env and args,
a kubeconfig-shaped object), and the test greps every byte `ctrail ingest` left behind.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import LAST_APPLIED, PREFIX, Redactor, load_or_create_key
from ctrail.components import RawRecord
from tests.stored_bytes import every_byte

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
    # Every file, and what the store compresses decompressed (a plain grep misses it).
    texts, index_hits = every_byte([data], tmp_path / "scratch", SECRETS)
    everything = b"\n".join(texts.values())
    assert len(everything) > 10_000 and index_hits == []
    for what, value in SECRETS.items():
        assert value.encode() not in everything, f"{what} stored"
        assert value.encode() not in done.stderr + done.stdout, f"{what} logged"
    key = (data / "redaction.key").read_bytes().strip()
    assert stat.S_IMODE((data / "redaction.key").stat().st_mode) == 0o600
    # Equality still works: the stored hash is the one the key gives for the value.
    assert Redactor(key).digest(SECRETS["token request"]).encode() in everything


# -- the planted-secret corpus: every shape of collector.redact's policy, each with its own value

PLANTED = {name: f"PLANTED-{n:02d}-{re.sub('[^A-Za-z0-9]+', '', name)}-Zq7" for n, name in enumerate((
    "env DB_PASS", "env GH_PAT", "env STRIPE_KEY", "env AWS_SECRET_ACCESS_KEY",
    "plain key DB_PASSWORD", "plain key clientSecret", "url password", "redis url password",
    "args --password=", "args --token next", "command sh -c --db-password", "args env NAME=",
    "uri token", "uri access_token", "uri password", "exec command --password next",
    "secretlist item", "list item no kind", "table row object", "table partial last-applied",
    "configmap DB_PASSWORD", "configmap password", "configmap properties line",
    "configmap last-applied", "gke secret data", "gke pod env", "falco cmdline --password",
    "falco cmdline --token next", "falco env dump", "falco output url", "probe header",
    "configmap pem body"))}
META = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7"], "userAgent": "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-20T10:43:00.000000Z",
        "stageTimestamp": "2026-11-20T10:43:00.050000Z",
        "annotations": {"authorization.k8s.io/decision": "allow",
                        "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding "
                                                       "\"ops\" of ClusterRole \"admin\""}}
# What must survive: names, namespaces, images, ordinary annotations and settings.
KEPT = ("shop", "checkout", "registry.example.com/shop/checkout:1.4.2", "LOG_LEVEL", "debug",
        "example.com/owner", "team-payments", "db-credentials", "DB_PASSWORD", "tls.key",
        "BEGIN RSA PRIVATE KEY", "postgres://app:", "@db.shop.svc:5432/orders",
        "RBAC: allowed by ClusterRoleBinding", "kubectl/v1.30.2", "mysql", "--password",
        "/api/v1/namespaces/shop/services/checkout:80/proxy/health?")


def audit_event(verb: str, resource: str, uri: str, level: str = "RequestResponse",
                **bodies: Any) -> bytes:
    ref = {"resource": resource, "namespace": "shop", "name": "checkout", "apiVersion": "v1"}
    return orjson.dumps({**META, "level": level, "auditID": f"id-{verb}-{resource}-{len(uri)}",
                         "verb": verb, "requestURI": uri, "objectRef": ref, **bodies})


def planted_audit_lines() -> list[bytes]:
    p = PLANTED
    env = [{"name": "DB_PASS", "value": p["env DB_PASS"]}, {"name": "GH_PAT", "value": p["env GH_PAT"]},
           {"name": "STRIPE_KEY", "value": p["env STRIPE_KEY"]},
           {"name": "AWS_SECRET_ACCESS_KEY", "value": p["env AWS_SECRET_ACCESS_KEY"]},
           {"name": "DATABASE_URL",
            "value": f"postgres://app:{p['url password']}@db.shop.svc:5432/orders"},
           {"name": "LOG_LEVEL", "value": "debug"},
           {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db-credentials",
                                                               "key": "username"}}}]
    container = {"name": "checkout", "image": "registry.example.com/shop/checkout:1.4.2",
                 "command": ["sh", "-c", f"migrate --db-password {p['command sh -c --db-password']}"
                             " && exec app"],
                 "args": [f"--password={p['args --password=']}", "--token", p["args --token next"],
                          "--verbose", f"CACHE_URL=redis://:{p['redis url password']}@cache:6379",
                          f"API_TOKEN={p['args env NAME=']}"],
                 "env": env,
                 "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "httpHeaders": [
                     {"name": "Authorization", "value": f"Basic {p['probe header']}"}]}}}
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": "checkout", "namespace": "shop",
                        "annotations": {"example.com/owner": "team-payments"}},
           "spec": {"containers": [container],
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "shop"}]},
           "clientSecret": p["plain key clientSecret"], "DB_PASSWORD": p["plain key DB_PASSWORD"]}
    secret_item = {"metadata": {"name": "db-credentials", "namespace": "shop"},
                   "data": {"password": p["list item no kind"]}, "type": "Opaque"}
    last_applied = json.dumps({"kind": "Secret", "data": {"password": p["table partial last-applied"]}})
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
             "columnDefinitions": [{"name": "Name", "type": "string"}],
             "rows": [{"cells": ["db-credentials", "Opaque", 1, "3d"],
                       "object": {"kind": "Secret", "apiVersion": "v1",
                                  "metadata": {"name": "db-credentials", "namespace": "shop"},
                                  "data": {"token": p["table row object"]}}},
                      {"cells": ["api", "Opaque", 1, "3d"],
                       "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": {"name": "api", "namespace": "shop", "annotations": {
                                      LAST_APPLIED: last_applied}}}}]}
    configmap = {"kind": "ConfigMap", "apiVersion": "v1",
                 "metadata": {"name": "checkout", "namespace": "shop", "annotations": {
                     LAST_APPLIED: json.dumps({"kind": "ConfigMap", "data": {
                         "API_TOKEN": p["configmap last-applied"]}}) + "\n"}},
                 "data": {"DB_PASSWORD": p["configmap DB_PASSWORD"], "password": p["configmap password"],
                          "app.properties": f"db.user=app\ndb.password = {p['configmap properties line']}\n",
                          "tls.key": "-----BEGIN RSA PRIVATE KEY-----\n"
                                     f"{p['configmap pem body']}\n-----END RSA PRIVATE KEY-----\n",
                          "LOG_LEVEL": "debug"}}
    proxy = "/api/v1/namespaces/shop/services/checkout:80/proxy/health?"
    return [
        audit_event("create", "pods", "/api/v1/namespaces/shop/pods", requestObject=pod,
                    responseObject=pod),
        audit_event("list", "secrets", "/api/v1/namespaces/shop/secrets", responseObject={
            "kind": "SecretList", "apiVersion": "v1", "metadata": {},
            "items": [{"metadata": {"name": "db"}, "data": {"x": p["secretlist item"]}}]}),
        audit_event("list", "secrets", "/api/v1/namespaces/shop/secrets?limit=500",
                    responseObject={"kind": "List", "items": [secret_item]}),
        audit_event("list", "secrets", "/api/v1/namespaces/shop/secrets?includeObject=Object",
                    responseObject=table),
        audit_event("create", "configmaps", "/api/v1/namespaces/shop/configmaps",
                    requestObject=configmap),
        audit_event("get", "services", proxy + f"token={p['uri token']}&timeout=5s", "Metadata"),
        audit_event("get", "services", proxy + f"access_token={p['uri access_token']}", "Metadata"),
        audit_event("get", "services", proxy + f"user=app&password={p['uri password']}", "Metadata"),
        audit_event("create", "pods", "/api/v1/namespaces/shop/pods/checkout/exec?command=mysql"
                    f"&command=--password&command={p['exec command --password next']}"
                    "&container=checkout&stdin=true", "Metadata"),
    ]


def gke_line() -> bytes:
    p = PLANTED
    return orjson.dumps({
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "alice@example.com"},
            "requestMetadata": {"callerIp": "203.0.113.7",
                                "callerSuppliedUserAgent": "kubectl/v1.30.2 (linux/amd64)"},
            "serviceName": "k8s.io", "methodName": "io.k8s.core.v1.secrets.create",
            "resourceName": "core/v1/namespaces/shop/secrets/db-credentials",
            "request": {"@type": "core.k8s.io/v1.Secret", "kind": "Secret", "apiVersion": "v1",
                        "metadata": {"name": "db-credentials", "namespace": "shop"},
                        "data": {"password": p["gke secret data"]}},
            "response": {"@type": "core.k8s.io/v1.Pod", "kind": "Pod", "spec": {"containers": [
                {"name": "checkout", "env": [{"name": "DB_PASS", "value": p["gke pod env"]}]}]}}},
        "timestamp": "2026-11-20T10:43:00.000000Z", "labels": {"authorization.k8s.io/decision": "allow"},
        "logName": "projects/shop/logs/cloudaudit.googleapis.com%2Factivity"})


def falco_lines() -> list[bytes]:
    p = PLANTED
    cmdline = f"mysql -u app --password={p['falco cmdline --password']} -h db.shop.svc orders"
    token_cmd = f"curl --token {p['falco cmdline --token next']} https://api.example.com"
    url = f"postgres://app:{p['falco output url']}@db.shop.svc:5432/orders"

    def alert(cmd: str, extra: dict[str, Any]) -> bytes:
        return orjson.dumps({
            "hostname": "node-1", "priority": "Warning", "rule": "Credential in command line",
            "source": "syscall", "time": "2026-11-20T10:43:00.123456789Z", "tags": ["T1552"],
            "output": f"10:43:00.123456789: Warning credential seen (user=root command={cmd} "
                      f"container_id=3f2a8c1d9e0b image=registry.example.com/shop/checkout:1.4.2)",
            "output_fields": {"container.id": "3f2a8c1d9e0b", "proc.cmdline": cmd,
                              "proc.name": cmd.split()[0], "user.name": "root",
                              "container.image.repository": "registry.example.com/shop/checkout",
                              "k8s.ns.name": "shop", "k8s.pod.name": "checkout", **extra}})
    return [alert(cmdline, {}), alert(token_cmd, {}),
            alert("env", {"proc.env": f"HOME=/root DB_PASS={p['falco env dump']} LOG_LEVEL=debug"}),
            alert(f"psql {url}", {})]


def test_no_planted_secret_is_stored_anywhere_and_names_survive() -> None:
    from collector.parsers.falco import FalcoParser
    assert len(set(PLANTED.values())) >= 25
    redactor = Redactor(b"k" * 32)
    audit, falco = K8sAuditParser(redactor), FalcoParser(redactor)
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    events = [e for n, line in enumerate(planted_audit_lines() + [gke_line()])
              for e in audit.parse(RawRecord(line, f"a:{n}", now))]
    events += [e for n, line in enumerate(falco_lines())
               for e in falco.parse(RawRecord(line, f"f:{n}", now))]
    assert all("redacted" in e.tags for e in events)
    stored = "\n".join(e.model_dump_json(by_alias=True) for e in events)
    leaked = [name for name, value in PLANTED.items() if value in stored]
    assert leaked == []
    assert all(e.event.original and PREFIX in e.event.original for e in events)
    for kept in KEPT:
        assert kept in stored, kept
    # Only the secret is replaced: equal secrets hash equal, wherever they were found.
    pod = events[0].kubernetes.audit["requestObject"]  # type: ignore[index, union-attr]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["DB_PASS"] == redactor.digest(PLANTED["env DB_PASS"])
    assert env["LOG_LEVEL"] == "debug"
    assert env["DATABASE_URL"] == (f"postgres://app:{redactor.digest(PLANTED['url password'])}"
                                   "@db.shop.svc:5432/orders")
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/shop/checkout:1.4.2"
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "shop"}]
    assert pod["metadata"]["annotations"] == {"example.com/owner": "team-payments"}
    mysql = events[-4]
    assert mysql.process is not None and mysql.process.command_line == (
        f"mysql -u app --password={redactor.digest(PLANTED['falco cmdline --password'])} "
        "-h db.shop.svc orders")
    gke = events[len(planted_audit_lines())]
    assert gke.kubernetes.audit["requestObject"]["data"]["password"] == redactor.digest(  # type: ignore[index, union-attr]
        PLANTED["gke secret data"])


def test_configmap_credentials_keep_what_the_detection_rule_reads() -> None:
    (event,) = K8sAuditParser(Redactor(b"k" * 32)).parse(
        RawRecord(planted_audit_lines()[4], "a:1", datetime.now(timezone.utc)))
    data = event.kubernetes.audit["requestObject"]["data"]  # type: ignore[index, union-attr]
    assert data["tls.key"].startswith("-----BEGIN RSA PRIVATE KEY-----\nhmac-sha256:")
    assert data["tls.key"].endswith("\n-----END RSA PRIVATE KEY-----\n")
    assert data["app.properties"].startswith("db.user=app\ndb.password = hmac-sha256:")
    assert data["LOG_LEVEL"] == "debug"


def test_a_metadata_event_takes_the_fast_path_and_stays_byte_identical(real_data: Path) -> None:
    redactor = Redactor(b"k" * 32)
    parser = K8sAuditParser(redactor)
    line = orjson.dumps({**META, "level": "Metadata", "auditID": "a", "verb": "get",
                         "requestURI": "/api/v1/namespaces/shop/secrets/db?timeout=32s",
                         "objectRef": {"resource": "secrets", "namespace": "shop", "name": "db"}})
    real = (real_data / "falco-k8saudit-traces/trace_files/create_secret.json").read_bytes()
    for raw in (line, real.splitlines()[0]):
        assert b"authorization.k8s.io/decision" in raw
        (event,) = parser.parse(RawRecord(raw, "a:1", datetime.now(timezone.utc)))
        assert redactor.walks == 0 and redactor.audit(orjson.loads(raw)) is None
        assert event.event.original.encode() == raw and "redacted" not in event.tags
        assert event.kubernetes.audit == orjson.loads(raw)  # type: ignore[union-attr]
    body = orjson.dumps({**orjson.loads(line), "level": "Request", "requestObject": {}})
    parser.parse(RawRecord(body, "a:2", datetime.now(timezone.utc)))
    assert redactor.walks == 1


def test_real_falco_alerts_are_left_as_they_are(real_data: Path) -> None:
    redactor = Redactor(b"k" * 32)
    for path in sorted((real_data / "falco-alerts-json").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                assert redactor.falco(orjson.loads(line)) is None, line[:200]
