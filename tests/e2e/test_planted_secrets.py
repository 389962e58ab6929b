"""Issue 14, leaks: a planted-secret corpus through a real `ctrail run`, then every byte it left.

The corpus is the unit test's (tests/unit/collector/test_redaction.py: audit bodies, Table
responses, Lists of Secrets, `?token=` URIs, a GKE entry, Falco command lines) plus one value for
each other way in: AKS envelopes, an audit webhook EventList, Docker events (JSON and text),
container log lines (CRI and json-file), Distribution and Harbor notifications, Fluent forward
records, and records that get dead-lettered (bad JSON from four senders, a bad EventList item,
a line cut at max_record_bytes, a forward entry that is not a map). `ctrail run` takes them in
through its own listeners and tailers, with the evidence archive on and two notify receivers
that alerts on planted events reach; once everything is stored, dead-lettered and delivered it
is stopped, and no planted value may be found (tests/stored_bytes.py reads the files):
- in any file under the data directory or the evidence directory, read as bytes, every gzip
  member and zstd frame in it decompressed (with the zstd dictionaries the store keeps), and
  every SQLite database read row by row (its WAL applied) with each full-text index asked;
  and in those files while the run still runs (the raw log's segments are deleted at close);
- in the run's log (debug level, JSON lines), in any request a receiver got, in `ctrail
  ingest`'s text log of the same audit log;
- in what `ctrail search`, `alerts`, `dlq list` (base64 originals decoded) and `timeline` print.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import orjson
from fluent.sender import FluentSender

from collector.redact import PREFIX
from tests.ctrail_process import EXE
from tests.stored_bytes import every_byte, files_now, found_in
from tests.unit.collector.test_redaction import (
    META,
    PLANTED,
    falco_lines,
    gke_line,
    planted_audit_lines,
)
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "sinks"))
from receivers import SlackReceiver, WebhookReceiver  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from test_notify import outbox_counts  # noqa: E402
from test_run import free_port  # noqa: E402

TOKENS = {"TEST_AUDIT_TOKEN": "e2e-audit-token", "TEST_FALCO_TOKEN": "e2e-falco-token",
          "TEST_REGISTRY_TOKEN": "e2e-registry-token", "TEST_HARBOR_TOKEN": "e2e-harbor-token"}
MAX_RECORD_BYTES = 64 * 1024
SLACK_PATH = "/services/T0PLANT/B0PLANT/planted-slack-path"
CID = "7c1e9a3b5d2f4c6e8a0b1d3f5e7a9c2b4d6f8e0a1c3e5a7b9d1f3e5a7c9b1d3f"


def _planted(n: int, name: str) -> str:
    return f"PLANTED-{n:02d}-{re.sub('[^A-Za-z0-9]+', '', name)}-Zq7"


# The unit corpus numbers its values from 00; these follow from 40.
MORE = {name: _planted(n, name) for n, name in enumerate((
    "aks secret data", "aks uri token", "webhook item stringData", "docker exec --password=",
    "docker label db-password", "docker inspect label API_TOKEN", "docker text exec token",
    "cri url password", "cri bearer", "json-file password", "registry url password",
    "registry url token", "harbor replication url", "harbor cloudevents access_token",
    "forward log assign", "forward message bearer", "dlq audit bearer", "dlq audit --token",
    "dlq falco body password", "dlq docker url password", "dlq webhook item secret",
    "dlq record too large", "dlq forward entry"), start=40)}
# A JWT (header.payload.signature) is recognised by its shape: the planted part is its payload.
MORE["forward jwt"] = "eyJhbGciOiJIUzI1NiJ9.PLANTED-63-forwardjwt-Zq7.c2lnbmF0dXJlLXBsYW50ZWQ"
CORPUS = {**PLANTED, **MORE}


def aks_line() -> bytes:
    """An AKS diagnostic record (Event Hubs / storage export) holding a Secret create, the
    Event as a JSON string in properties.log, as AKS writes it."""
    m = MORE
    event = {**META, "level": "RequestResponse", "auditID": "aks-1", "verb": "create",
             "requestURI": f"/api/v1/namespaces/shop/secrets?token={m['aks uri token']}",
             "objectRef": {"resource": "secrets", "namespace": "shop", "name": "aks-db"},
             "requestObject": {"kind": "Secret", "apiVersion": "v1",
                               "metadata": {"name": "aks-db", "namespace": "shop"},
                               "data": {"connection": m["aks secret data"]}}}
    return orjson.dumps({
        "category": "kube-audit", "operationName": "Microsoft.ContainerService/managedClusters/"
        "diagnosticLogs/Read", "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/SHOP/PROVIDERS/"
        "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/SHOP", "time": "2026-11-20T10:43:00.0500000Z",
        "properties": {"log": orjson.dumps(event).decode(), "pod": "kube-apiserver-7d9f-x2x",
                       "stream": "stdout"}})


def event_list() -> bytes:
    """What kube-apiserver's webhook backend posts: the corpus's audit events as items (no kind
    of their own), plus a Secret item and an item too broken to store (dead-lettered alone)."""
    items = [orjson.loads(line) for line in planted_audit_lines()]
    for item in items:
        del item["kind"], item["apiVersion"]
    secret = {**META, "level": "Request", "auditID": "hook-secret", "verb": "create",
              "requestURI": "/api/v1/namespaces/shop/secrets",
              "objectRef": {"resource": "secrets", "namespace": "shop", "name": "hooked"},
              "requestObject": {"kind": "Secret", "apiVersion": "v1", "stringData": {
                  "api-key": MORE["webhook item stringData"]}}}
    del secret["kind"], secret["apiVersion"]
    broken = {"auditID": "hook-broken", "stage": 7, "requestObject": {
        "kind": "Secret", "data": {"password": MORE["dlq webhook item secret"]}}}
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                         "items": [*items, secret, broken]})


def docker_lines() -> list[bytes]:
    m = MORE
    attributes = {"image": "registry.example.com/shop/checkout:1.4.2", "name": "checkout",
                  "com.example.db-password": m["docker label db-password"],
                  "io.kubernetes.pod.namespace": "shop"}
    exec_create = {"Type": "container", "Action": f"exec_create: mysql -uroot --password="
                   f"{m['docker exec --password=']} orders", "Actor": {"ID": CID, "Attributes":
                   attributes}, "scope": "local", "time": 1795171380,
                   "timeNano": 1795171380000000001}
    start = {"event": {"Type": "container", "Action": "start", "Actor": {"ID": CID, "Attributes": {
        "image": "registry.example.com/shop/checkout:1.4.2", "name": "checkout"}},
        "scope": "local", "time": 1795171381, "timeNano": 1795171381000000001},
        "inspect": {"Id": CID, "Name": "/checkout", "Image": "sha256:" + "ab" * 32,
                    "Config": {"Image": "registry.example.com/shop/checkout:1.4.2", "User": "",
                               "Labels": {"API_TOKEN": m["docker inspect label API_TOKEN"]}},
                    "HostConfig": {"Privileged": False}, "Mounts": []}}
    text = (f"2026-11-20T10:43:02.000000000Z container exec_start: sh -c export GITHUB_TOKEN="
            f"{m['docker text exec token']} {CID} (image=registry.example.com/shop/checkout:1.4.2,"
            " name=checkout)")
    bad = ('{"Type":"container","Action":"exec_create: psql postgres://app:'
           f'{m["dlq docker url password"]}@db/orders"')                    # cut short
    return [orjson.dumps(exec_create), orjson.dumps(start), text.encode(), bad.encode()]


def container_log_lines() -> list[bytes]:
    m = MORE
    return [
        f"2026-11-20T10:43:03.000000001Z stdout F connecting to postgres://app:"
        f"{m['cri url password']}@db.shop.svc:5432/orders".encode(),
        f'2026-11-20T10:43:04.000000001Z stderr F curl -H "Authorization: Bearer '
        f'{m["cri bearer"]}" https://api.example.com'.encode(),
        orjson.dumps({"log": f"login ok for app password={m['json-file password']}\n",
                      "stream": "stdout", "time": "2026-11-20T10:43:05.000000001Z"})]


def distribution_envelope(real: Path) -> bytes:
    doc = orjson.loads((real / "distribution-notifications/docs_push_envelope_3events.json")
                       .read_bytes())
    first, second = doc["events"][0]["target"], doc["events"][1]["target"]
    first["url"] = first["url"].replace("https://", f"https://ci:{MORE['registry url password']}@")
    second["url"] = second["url"] + f"?token={MORE['registry url token']}"
    return orjson.dumps(doc)


def harbor_payloads(real: Path) -> list[bytes]:
    default = orjson.loads((real / "harbor-webhooks/replication_status_changed.default.json")
                           .read_bytes())
    default["event_data"]["replication"]["dest_resource"]["endpoint"] = (
        f"https://robot$replicator:{MORE['harbor replication url']}@harbor.example.com")
    cloud = orjson.loads((real / "harbor-webhooks/replication_status_changed.cloudevents.json")
                         .read_bytes())
    cloud["data"]["replication"]["src_resource"]["endpoint"] = (
        f"https://hub.example.com/v2/?access_token={MORE['harbor cloudevents access_token']}")
    return [orjson.dumps(default), orjson.dumps(cloud)]


def bad_audit_line() -> bytes:
    m = MORE
    return (f'{{"kind":"Event","apiVersion":"audit.k8s.io/v1","note":"curl -H \\"Authorization: '
            f'Bearer {m["dlq audit bearer"]}\\" --token {m["dlq audit --token"]}"').encode()


def too_large_line() -> bytes:
    """An audit line past pipeline.max_record_bytes: cut, and dead-lettered as it was cut."""
    return orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "requestObject": {
        "kind": "ConfigMap", "data": {"password": MORE["dlq record too large"],
                                      "padding": "x" * MAX_RECORD_BYTES}}})


def config_text(tmp_path: Path, ports: dict[str, int], logs_glob: str) -> str:
    return f"""
sources:
  apiserver-log: {{type: k8s_audit_file, path: {tmp_path / 'audit.log'}, poll_interval_secs: 0.1}}
  apiserver: {{type: k8s_audit_webhook, port: {ports['audit']}, token: {{env: TEST_AUDIT_TOKEN}}}}
  falco: {{type: falco_http, port: {ports['falco']}, token: {{env: TEST_FALCO_TOKEN}}}}
  registry: {{type: distribution_webhook, port: {ports['registry']},
              token: {{env: TEST_REGISTRY_TOKEN}}}}
  harbor: {{type: harbor_webhook, port: {ports['harbor']}, token: {{env: TEST_HARBOR_TOKEN}}}}
  docker: {{type: file, format: docker-events, path: {tmp_path / 'docker.jsonl'},
            poll_interval_secs: 0.1}}
  pods: {{type: container_logs, glob: "{logs_glob}", poll_interval_secs: 0.1}}
  fluent-bit: {{type: fluent_forward, port: {ports['forward']}, allow_unauthenticated: true}}
pipeline: {{max_record_bytes: {MAX_RECORD_BYTES}}}
evidence:
  path: {tmp_path / 'evidence'}
  seal_after_secs: 0
notify:
  receivers:
    chat: {{type: slack, webhook_url: {{env: TEST_SLACK_URL}}}}
    siem: {{type: webhook, url: {{env: TEST_HOOK_URL}}, signing_secret: {{env: TEST_HOOK_SECRET}}}}
  delivery: {{initial_backoff_secs: 0.2, max_backoff_secs: 1, poll_interval_secs: 0.2}}
"""


def post(port: int, body: bytes, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("POST", "/", body=body, headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def ctrail_json(data_dir: Path, config: Path, *args: str) -> tuple[str, str]:
    """What `ctrail <args> --format json` prints: its output and its log. It must succeed."""
    done = subprocess.run([str(EXE), *args, "--config", str(config), "--data-dir", str(data_dir),
                           "--format", "json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def count(data_dir: Path, config: Path, *args: str) -> int:
    return len(ctrail_json(data_dir, config, *args)[0].splitlines())


# -- the run -----------------------------------------------------------------------------------

def test_no_planted_secret_is_written_logged_notified_or_printed(tmp_path: Path,
                                                                 real_data: Path) -> None:
    assert len(set(CORPUS.values())) == len(CORPUS) >= 40
    ports = {name: free_port() for name in ("audit", "falco", "registry", "harbor", "forward")}
    slack, hook = SlackReceiver(), WebhookReceiver()
    data_dir, evidence, logs = tmp_path / "data", tmp_path / "evidence", tmp_path / "pods"
    logs.mkdir()
    dead = [bad_audit_line(), too_large_line()]
    audit_lines = [*planted_audit_lines(), gke_line(), aks_line(), *dead]
    (tmp_path / "audit.log").write_bytes(b"\n".join(audit_lines) + b"\n")
    (tmp_path / "docker.jsonl").write_bytes(b"\n".join(docker_lines()) + b"\n")
    (logs / f"checkout-5d8f_shop_app-{CID}.log").write_bytes(
        b"\n".join(container_log_lines()) + b"\n")
    config = tmp_path / "ctrail.yaml"
    config.write_text(config_text(tmp_path, ports, str(logs / "*.log")))
    env = {**os.environ, **TOKENS, "TEST_SLACK_URL": slack.base + SLACK_PATH,
           "TEST_HOOK_URL": f"{hook.base}/in", "TEST_HOOK_SECRET": hook.secret.decode()}
    # Every event of the corpus: the audit log's (not its two bad lines), the EventList's (not
    # its broken item), Falco's, Docker's (not the bad line), the pod's log lines, the
    # Distribution envelope's three, Harbor's two and the three forwarded.
    events = (len(audit_lines) - 2 + len(planted_audit_lines()) + 1 + len(falco_lines())
              + len(docker_lines()) - 1 + len(container_log_lines()) + 3 + 2 + 3)
    log = tmp_path / "run.log"
    try:
        with open(log, "wb") as stderr:
            # At debug level, as JSON lines: every log line a record can cause is written.
            proc = subprocess.Popen([str(EXE), "-v", "--log-format", "json", "run", "--config",
                                     str(config), "--data-dir", str(data_dir)], cwd=REPO,
                                    env=env, stderr=stderr)
            try:
                send_everything(ports, real_data)
                wait_for(lambda: count(data_dir, config, "search", "NOT event.dataset:"
                                       "containertrail.audit", "--limit", "10000") == events,
                         timeout=90, interval=0.5)
                wait_for(lambda: count(data_dir, config, "dlq", "list") == 6, timeout=30)
                wait_for(lambda: delivered(data_dir), timeout=60)
                # The raw log's segments, deleted at close, while they are there.
                running = files_now([data_dir, evidence])
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        slack.close()
        hook.close()
    assert slack.accepted and hook.accepted and not (slack.problems or hook.problems)
    rules = {a["rule"]["id"] for d in hook.accepted
             for a in ([d.body["alert"]] if d.body["type"] == "alert" else d.body["alerts"])}
    assert {"CT-K8S-008", "CT-K8S-022", "CT-REG-001", "CT-RT-001"} <= rules, rules
    # The same audit log through `ctrail ingest`, logging as text.
    ingested = subprocess.run([str(EXE), "-v", "ingest", "--source", "k8s-audit",
                               str(tmp_path / "audit.log"), "--data-dir", str(tmp_path / "ingest")],
                              capture_output=True, cwd=REPO, timeout=120)
    # (Its default max_record_bytes takes the long line whole.)
    assert ingested.stdout.strip() == f"{len(audit_lines) - 1} accepted, 1 dead-lettered".encode()

    outputs = {
        "ctrail search": ctrail_json(data_dir, config, "search", "*", "--limit", "10000"),
        "ctrail alerts": ctrail_json(data_dir, config, "alerts"),
        "ctrail dlq list": ctrail_json(data_dir, config, "dlq", "list", "--all"),
        "ctrail timeline": ctrail_json(data_dir, config, "timeline", "--container", CID),
    }
    printed = {command: out for command, (out, _log) in outputs.items()}
    # The container's story: its subject line, then its Docker events and log lines.
    assert len(printed["ctrail timeline"].splitlines()) >= 1 + 3 + 3, printed["ctrail timeline"]
    dead_letters = [orjson.loads(line) for line in printed["ctrail dlq list"].splitlines()]
    assert sorted(d["reason"] for d in dead_letters) == [
        "invalid_json", "invalid_json", "invalid_json", "record_too_large", "schema_mismatch",
        "undecodable"], dead_letters
    # Each kept its record, with the secret hashed (a binary one as base64: read it decoded).
    originals = {f"dead letter {d['origin']}": base64.b64decode(d["original"])
                 if d["original_encoding"] == "base64" else d["original"].encode()
                 for d in dead_letters}
    assert all(PREFIX.encode() in original for original in originals.values()), originals
    # Secrets were hashed, not dropped: what names them and the rest of each record stayed.
    for kept in ("--password=hmac-sha256:", "GITHUB_TOKEN=hmac-sha256:",
                 "postgres://app:hmac-sha256:", "https://ci:hmac-sha256:",
                 "robot$replicator:hmac-sha256:", "access_token=hmac-sha256:",
                 "DB_PASSWORD=hmac-sha256:", "Bearer hmac-sha256:", "com.example.db-password",
                 "registry.example.com/shop/checkout", "checkout-5d8f", "library/test"):
        assert kept in printed["ctrail search"], kept
    texts, index_hits = every_byte([data_dir, evidence, tmp_path / "ingest"],
                                   tmp_path / "scratch", CORPUS)
    # The store's records and the evidence segments were read through their compression.
    assert any(PREFIX.encode() in text for where, text in texts.items()
               if "sqlite3 value" in where and "compressed" in where)
    assert any(PREFIX.encode() in text for where, text in texts.items()
               if where.startswith(str(evidence)) and "compressed" in where)
    assert any("ctrail.raw" in where for where in running)
    texts.update(running)
    texts.update(originals)
    texts.update({f"{command} output and log": (out + log).encode()
                  for command, (out, log) in outputs.items()})
    texts["the run's log"] = log.read_bytes()
    texts["ctrail ingest's output and log"] = ingested.stdout + ingested.stderr
    texts.update({f"request {n} to the Slack receiver": orjson.dumps([d.path, d.headers, d.body])
                  for n, d in enumerate(slack.accepted + slack.refused)})
    texts.update({f"request {n} to the webhook receiver": orjson.dumps([d.path, d.headers, d.body])
                  for n, d in enumerate(hook.accepted + hook.refused)})
    leaks = found_in(texts, CORPUS, tmp_path)
    assert not leaks and not index_hits, "\n".join(
        [f"{len(leaks)} planted values found:"] + [f"{what}: {', '.join(places[:4])}"
                                                   for what, places in leaks.items()]
        + index_hits)


def send_everything(ports: dict[str, int], real: Path) -> None:
    wait_for(lambda: all(_port_open(p) for p in ports.values()), timeout=60)
    assert post(ports["audit"], event_list(), TOKENS["TEST_AUDIT_TOKEN"]) == 200
    for alert in falco_lines():
        assert post(ports["falco"], alert, TOKENS["TEST_FALCO_TOKEN"]) == 200
    bad_falco = f'{{"rule":"x","output":"mysql password={MORE["dlq falco body password"]}'
    assert post(ports["falco"], bad_falco.encode(), TOKENS["TEST_FALCO_TOKEN"]) == 200
    assert post(ports["registry"], distribution_envelope(real),
                TOKENS["TEST_REGISTRY_TOKEN"]) == 200
    for payload in harbor_payloads(real):
        assert post(ports["harbor"], payload, TOKENS["TEST_HARBOR_TOKEN"]) == 200
    sender = FluentSender("kube", port=ports["forward"])
    tag = f"var.log.containers.checkout-5d8f_shop_app-{CID}.log"
    for record in ({"log": f"2026-11-20T10:43:06.5Z stdout F app up DB_PASSWORD="
                           f"{MORE['forward log assign']} cache=on"},
                   {"log": f"Authorization: Bearer {MORE['forward message bearer']}\n",
                    "stream": "stderr", "time": "2026-11-20T10:43:07.5Z"},
                   {"log": f"2026-11-20T10:43:08.5Z stdout F session {MORE['forward jwt']}"}):
        assert sender.emit(tag, record), sender.last_error
    sender.close()
    # An entry whose record is not a map: the forward input dead-letters the entry's bytes.
    with socket.create_connection(("127.0.0.1", ports["forward"]), timeout=20) as sock:
        sock.sendall(msgpack.packb(["kube." + tag, [[1795171390, f"mysql --password="
                                                    f"{MORE['dlq forward entry']}"]]]))
        sock.recv(100)                                     # closed after the bad frame


def delivered(data_dir: Path) -> bool:
    counts = outbox_counts(data_dir)
    return bool(counts.get("delivered")) and set(counts) == {"delivered"}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0

