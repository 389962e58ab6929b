"""`ctrail run` with every webhook source, fed what kube-apiserver, Falco, a Distribution registry
and Harbor post: stored and searchable; a 200 survives kill -9; tokens never reach the logs."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
TOKENS = {"CTRAIL_E2E_AUDIT_TOKEN": "audit-7c1f2e9a", "CTRAIL_E2E_FALCO_TOKEN": "falco-55d0b3e1",
          "CTRAIL_E2E_REGISTRY_TOKEN": "registry-9e8d7c6b", "CTRAIL_E2E_HARBOR_TOKEN": "harbor-a1b2"}
AUDIT, FALCO, REGISTRY, HARBOR = TOKENS.values()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def ctrail(*args: str) -> list[dict]:  # type: ignore[type-arg]
    done = subprocess.run([str(EXE), *args, "--format", "json"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def count(data_dir: Path, query: str) -> int:
    return len(ctrail("search", query, "--limit", "100000", "--data-dir", str(data_dir)))


def post(port: int, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Ctrail:
    """`ctrail run` as a subprocess; stderr goes to a file, read after it stops."""

    def __init__(self, config: Path, data_dir: Path, log: Path, *flags: str) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [str(EXE), *flags, "run", "--config", str(config), "--data-dir", str(data_dir)],
                cwd=REPO, env={**os.environ, **TOKENS}, stdout=subprocess.DEVNULL, stderr=err)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Ctrail]]:
    started: list[Ctrail] = []

    def run(config: Path, *flags: str) -> Ctrail:
        started.append(Ctrail(config, tmp_path / "data", tmp_path / "stderr.log", *flags))
        return started[-1]
    yield run
    for each in started:
        if each.proc.poll() is None:
            each.proc.kill()
            each.proc.wait()


def audit_batch(user: str, size: int) -> bytes:
    items = ",".join(
        f'{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{user}-{i}",'
        f'"stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods/p{i}",'
        f'"verb":"get","user":{{"username":"{user}"}},"sourceIPs":["10.0.0.{i % 250}"],'
        f'"objectRef":{{"resource":"pods","namespace":"default","name":"p{i}"}},'
        f'"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2026-05-01T00:00:{i % 60:02d}Z",'
        f'"stageTimestamp":"2026-05-01T00:00:{i % 60:02d}Z"}}' for i in range(size))
    return f'{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{items}]}}'.encode()


def write_config(path: Path, ports: dict[str, int]) -> Path:
    path.write_text(f"""
sources:
  apiserver: {{type: k8s_audit_webhook, port: {ports['audit']}, token: {{env: CTRAIL_E2E_AUDIT_TOKEN}}}}
  falco: {{type: falco_http, port: {ports['falco']}, token: {{env: CTRAIL_E2E_FALCO_TOKEN}}}}
  registry: {{type: distribution_webhook, port: {ports['registry']},
              token: {{env: CTRAIL_E2E_REGISTRY_TOKEN}}}}
  harbor: {{type: harbor_webhook, port: {ports['harbor']}, token: {{env: CTRAIL_E2E_HARBOR_TOKEN}}}}
""")
    return path


def test_run_stores_what_each_webhook_sender_posts(tmp_path: Path, real_data: Path,
                                                   start: Callable[..., Ctrail]) -> None:
    ports = {name: free_port() for name in ("audit", "falco", "registry", "harbor")}
    run = start(write_config(tmp_path / "ctrail.yaml", ports))
    wait_for(lambda: all(port_open(p) for p in ports.values()))
    traces = real_data / "falco-k8saudit-traces/trace_files"
    items = [line for f in sorted(traces.glob("*.json")) if f.name != "fal_01_003.json"
             for line in f.read_bytes().splitlines() if line.strip()]
    event_list = (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
                  + b",".join(items) + b"]}")
    assert post(ports["audit"], event_list, {"Authorization": f"Bearer {AUDIT}",
                                             "Content-Type": "application/json"}) == 200
    alerts = [a for a in (real_data / "falco-alerts-json/falco_website_alerts.jsonl")
              .read_bytes().splitlines() if a.strip()]
    basic = "Basic " + base64.b64encode(f"falco:{FALCO}".encode()).decode()  # URL user info
    assert {post(ports["falco"], alert, {"Authorization": basic, "Content-Type":
                                         "application/json", "User-Agent": "falcosecurity/falco"})
            for alert in alerts} == {200}
    request = (real_data / "distribution-notifications/docs_push_http_request.txt").read_bytes()
    head, _, envelope = request.partition(b"\n\n")
    headers = dict(line.decode().split(": ", 1) for line in head.splitlines()[1:])
    headers.pop("Host")                                   # an upstream typo (see SOURCE.md)
    headers["Authorization"] = headers["Authorization"].replace("<your token, if needed>",
                                                                REGISTRY)
    assert post(ports["registry"], envelope, headers) == 200
    harbor = real_data / "harbor-webhooks"
    assert post(ports["harbor"], (harbor / "artifact_pushed.default.json").read_bytes(),
                {"Authorization": HARBOR, "Content-Type": "application/json"}) == 200
    assert post(ports["harbor"], (harbor / "artifact_pulled.cloudevents.invalid-json.txt")
                .read_bytes(), {"Authorization": HARBOR}) == 200      # kept as a dead letter
    assert post(ports["harbor"], b"{}", {"Authorization": AUDIT}) == 401   # another's token
    data_dir = tmp_path / "data"
    wait_for(lambda: count(data_dir, "event.dataset:registry.harbor") == 1)
    assert count(data_dir, "event.dataset:falco.alerts") == len(alerts)
    assert count(data_dir, "event.dataset:registry.distribution") == 3
    assert count(data_dir, "event.dataset:kubernetes.audit") == len(items)
    dead = ctrail("dlq", "list", "--data-dir", str(data_dir))
    assert [d["reason"] for d in dead if d["origin"].startswith("webhook harbor ")] == [
        "invalid_json"]
    assert run.stop() == 0


def test_a_batch_answered_200_is_stored_even_if_killed_at_once(tmp_path: Path,
                                                               start: Callable[..., Ctrail]) -> None:
    port = free_port()
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"sources:\n  apiserver: {{type: k8s_audit_webhook, port: {port}, "
                      "token: {env: CTRAIL_E2E_AUDIT_TOKEN}}\n")
    first = start(config)
    wait_for(lambda: port_open(port))
    assert post(port, audit_batch("killed-user", 100), {"Authorization": f"Bearer {AUDIT}"}) == 200
    first.proc.send_signal(signal.SIGKILL)                # no chance to flush anything more
    assert first.proc.wait(timeout=30) == -signal.SIGKILL
    again = start(config)
    wait_for(lambda: count(tmp_path / "data", "user.name:killed-user") == 100)
    assert again.stop() == 0


def test_no_token_reaches_stderr_or_the_data_dir(tmp_path: Path, start: Callable[..., Ctrail]) -> None:
    ports = {name: free_port() for name in ("audit", "falco", "registry", "harbor")}
    run = start(write_config(tmp_path / "ctrail.yaml", ports), "--verbose")
    wait_for(lambda: all(port_open(p) for p in ports.values()))
    near_miss = AUDIT[:-1] + "X"
    assert post(ports["audit"], audit_batch("token-user", 2), {"Authorization": f"Bearer {AUDIT}"}) == 200
    assert post(ports["audit"], audit_batch("x", 1), {"Authorization": f"Bearer {near_miss}"}) == 401
    assert post(ports["harbor"], b"not json", {"Authorization": HARBOR}) == 200
    assert post(ports["falco"], b"{}", {"Authorization": f"Bearer {FALCO}"}) == 200
    wait_for(lambda: count(tmp_path / "data", "user.name:token-user") == 2)
    assert run.stop() == 0
    stderr = run.log.read_bytes()
    assert b"Listening for webhooks." in stderr               # it did log, at debug level
    secrets = [s.encode() for s in (*TOKENS.values(), near_miss)]
    leaks = [(path.name, s) for path in (tmp_path / "stderr.log", *(tmp_path / "data").rglob("*"))
             if path.is_file() for s in secrets if s in path.read_bytes()]
    assert leaks == []
