"""`ctrail run` fed by kube-apiserver's own audit webhook client, not by our idea of its format.

tests/apiserver_webhook builds audit events with k8s.io/apiserver's request-audit code at the
levels an audit policy decides, and delivers them with the webhook backend (configured from a
kubeconfig, as --audit-webhook-config-file) behind the buffered batch backend, as kube-apiserver
wires them. Each test counts, by auditID, that every event the client sent is stored exactly once
and that nothing was dead-lettered.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests.e2e.apiserver_client import POLICY, apiserver_client  # noqa: F401 (a fixture)
from tests.unit.collector.test_http_listener import _key_and_cert
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
TOKEN_ENV, TOKEN = "CTRAIL_E2E_APISERVER_TOKEN", "apiserver-" + secrets.token_hex(12)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ctrail(data_dir: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    done = subprocess.run([str(EXE), *args, "--format", "json", "--data-dir", str(data_dir)],
                          capture_output=True, cwd=REPO)
    assert done.returncode == 0, done.stderr.decode()
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def stored_ids(data_dir: Path) -> Counter[str]:
    """How many times each auditID is stored."""
    found = ctrail(data_dir, "search", "event.dataset:kubernetes.audit", "--limit", "100000")
    return Counter(event["kubernetes"]["audit"]["auditID"] for event in found)


def dead_letters(data_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    return ctrail(data_dir, "dlq", "list")


class Pki:
    def __init__(self, directory: Path) -> None:
        ca_key, ca = _key_and_cert(directory, "ca", "ContainerTrail test CA", None)
        _key_and_cert(directory, "server", "localhost", (ca_key, ca.subject), server=True)
        _key_and_cert(directory, "client", "kube-apiserver", (ca_key, ca.subject))
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    def data(self, name: str) -> str:
        """A file as a kubeconfig's *-data field: base64 of the PEM."""
        return base64.b64encode((self.dir / name).read_bytes()).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def kubeconfig(path: Path, server: str, user: dict[str, str], ca: str | None = None) -> Path:
    """The file kube-apiserver's --audit-webhook-config-file names."""
    cluster = {"server": server, **({"certificate-authority-data": ca} if ca else {})}
    path.write_bytes(orjson.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "containertrail", "cluster": cluster}],
        "users": [{"name": "kube-apiserver", "user": user}],
        "contexts": [{"name": "audit", "context": {"cluster": "containertrail",
                                                   "user": "kube-apiserver"}}],
        "current-context": "audit"}))
    return path


def listener_config(path: Path, port: int, **keys: object) -> Path:
    source = {"type": "k8s_audit_webhook", "port": port, **keys}
    path.write_bytes(orjson.dumps({"sources": {"apiserver": source}}, default=str))
    return path


def tls_listener(path: Path, port: int, pki: Pki, **keys: object) -> Path:
    return listener_config(path, port, tls_cert_file=pki.path("server.crt"),
                           tls_key_file=pki.path("server.key"), **keys)


class Ctrail:
    """`ctrail run` as a subprocess; stderr goes to a file."""

    def __init__(self, config: Path, data_dir: Path, log: Path, port: int) -> None:
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [str(EXE), "run", "--config", str(config), "--data-dir", str(data_dir)],
                cwd=REPO, env={**os.environ, TOKEN_ENV: TOKEN}, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_for(lambda: port_open(port) or self.proc.poll() is not None)
        assert self.proc.poll() is None, log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class Setup:
    def __init__(self, tmp_path: Path, client: Path) -> None:
        self.tmp, self.client = tmp_path, client
        self.data_dir, self.log = tmp_path / "data", tmp_path / "ctrail-run.log"
        self.port = free_port()
        self.runs: list[Ctrail] = []

    def start(self, config: Path) -> Ctrail:
        self.runs.append(Ctrail(config, self.data_dir, self.log, self.port))
        return self.runs[-1]

    def send(self, kubeconfig: Path, events: int, *flags: str) -> subprocess.Popen[bytes]:
        """Start the client: kube-apiserver's webhook backend, batches of up to 400."""
        self.ids = self.tmp / "sent-ids.txt"
        with open(self.tmp / "client.log", "ab") as err:
            return subprocess.Popen(
                [str(self.client), "--kubeconfig", str(kubeconfig), "--policy", str(POLICY),
                 "--events", str(events), "--ids-out", str(self.ids), "--batch-max-size", "400",
                 "--batch-max-wait", "200ms", *flags],
                stdout=subprocess.PIPE, stderr=err)

    def finish(self, client: subprocess.Popen[bytes], timeout: float = 120) -> dict:  # type: ignore[type-arg]
        out, _ = client.communicate(timeout=timeout)
        errors = (self.tmp / "client.log").read_text(errors="replace")
        assert client.returncode == 0, f"the client failed:\n{errors[-3000:]}"
        return orjson.loads(out.splitlines()[-1])

    def assert_each_sent_event_stored_once(self, events: int) -> None:
        sent = self.ids.read_text().split()
        assert len(sent) == len(set(sent)) == events
        wait_for(lambda: sum(stored_ids(self.data_dir).values()) >= events, timeout=90,
                 interval=1.0)
        stored = stored_ids(self.data_dir)
        assert set(stored) == set(sent)
        assert [i for i, n in stored.items() if n != 1] == []
        assert dead_letters(self.data_dir) == []


@pytest.fixture
def setup(tmp_path: Path, apiserver_client: Path) -> Iterator[Setup]:  # noqa: F811
    each = Setup(tmp_path, apiserver_client)
    yield each
    for run in each.runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_bearer_token_10000_events_in_batches_of_400(setup: Setup, pki: Pki) -> None:
    run = setup.start(tls_listener(setup.tmp / "ctrail.json", setup.port, pki,
                                   token={"env": TOKEN_ENV}))
    config = kubeconfig(setup.tmp / "kubeconfig", f"https://127.0.0.1:{setup.port}/",
                        {"token": TOKEN}, ca=pki.data("ca.crt"))
    summary = setup.finish(setup.send(config, 10_000))
    assert summary["events"] == summary["delivered"] == 10_000
    setup.assert_each_sent_event_stored_once(10_000)
    assert run.stop() == 0
    assert TOKEN not in setup.log.read_text()


def test_mutual_tls_client_certificate(setup: Setup, pki: Pki) -> None:
    run = setup.start(tls_listener(setup.tmp / "ctrail.json", setup.port, pki,
                                   client_ca_file=pki.path("ca.crt"),
                                   client_names=["kube-apiserver"]))
    config = kubeconfig(setup.tmp / "kubeconfig", f"https://localhost:{setup.port}/",
                        {"client-certificate-data": pki.data("client.crt"),
                         "client-key-data": pki.data("client.key")}, ca=pki.data("ca.crt"))
    anonymous = kubeconfig(setup.tmp / "anonymous", f"https://localhost:{setup.port}/",
                           {"token": TOKEN}, ca=pki.data("ca.crt"))
    refused = setup.send(anonymous, 5, "--initial-backoff", "50ms")
    refused.communicate(timeout=60)
    assert refused.returncode == 1                       # no client certificate: no handshake
    assert setup.finish(setup.send(config, 2_000))["delivered"] == 2_000
    setup.assert_each_sent_event_stored_once(2_000)
    assert run.stop() == 0


def test_listener_restart_while_the_apiserver_sends(setup: Setup, pki: Pki) -> None:
    """SIGTERM mid-stream, then a new `ctrail run`: the backend retries what failed meanwhile
    (503 for the batches in flight, then refused connections) and nothing is stored twice."""
    listener = tls_listener(setup.tmp / "ctrail.json", setup.port, pki, token={"env": TOKEN_ENV})
    first = setup.start(listener)
    config = kubeconfig(setup.tmp / "kubeconfig", f"https://127.0.0.1:{setup.port}/",
                        {"token": TOKEN}, ca=pki.data("ca.crt"))
    # 6000 events over 4 s; kube-apiserver's default retry schedule (10, 15, 22.5, 33.75 s
    # after a failure) outlasts the restart even on a busy machine.
    client = setup.send(config, 6_000, "--rate", "1500")
    time.sleep(1.5)
    assert first.stop() == 0
    before_restart = sum(stored_ids(setup.data_dir).values())
    setup.start(listener)
    summary = setup.finish(client)
    assert 0 < before_restart < 6_000, "the restart was not in the middle of the stream"
    assert summary["failed_dials"] > 0, "no batch met the listener down: nothing was retried"
    assert summary["delivered"] == 6_000
    setup.assert_each_sent_event_stored_once(6_000)


def test_secret_data_reaches_no_file_of_the_data_directory(setup: Setup, pki: Pki) -> None:
    value = "ct-secret-" + secrets.token_hex(16)
    run = setup.start(tls_listener(setup.tmp / "ctrail.json", setup.port, pki,
                                   token={"env": TOKEN_ENV}))
    config = kubeconfig(setup.tmp / "kubeconfig", f"https://127.0.0.1:{setup.port}/",
                        {"token": TOKEN}, ca=pki.data("ca.crt"))
    setup.finish(setup.send(config, 600, "--secret-value", value))
    setup.assert_each_sent_event_stored_once(600)
    created = ctrail(setup.data_dir, "search", "kubernetes.audit.objectRef.resource:secrets AND "
                     "kubernetes.audit.level:RequestResponse", "--limit", "1000")
    assert len(created) == 100 and all(e["kubernetes"]["audit"].get("requestObject")
                                       for e in created)
    assert run.stop() == 0
    forms = [value.encode(), base64.b64encode(value.encode())]  # as typed, as the JSON holds it
    files = [p for p in setup.data_dir.rglob("*") if p.is_file()]
    assert files
    assert [(str(p), f) for p in files for f in forms if f in p.read_bytes()] == []
    assert value not in setup.log.read_text()


def test_over_plain_http_the_apiserver_sends_no_token(setup: Setup) -> None:
    """client-go reads a kubeconfig's credentials only for an https server: a token-protected
    listener without TLS refuses every batch kube-apiserver sends, and says so when it starts."""
    run = setup.start(listener_config(setup.tmp / "ctrail.json", setup.port,
                                      token={"env": TOKEN_ENV}))
    config = kubeconfig(setup.tmp / "kubeconfig", f"http://127.0.0.1:{setup.port}/",
                        {"token": TOKEN})
    client = setup.send(config, 10, "--initial-backoff", "50ms")
    client.communicate(timeout=60)
    assert client.returncode == 1
    assert "the server has asked for the client to provide credentials" in (
        setup.tmp / "client.log").read_text()
    assert run.stop() == 0
    assert "sends its webhook kubeconfig's token only over https" in setup.log.read_text()
    assert stored_ids(setup.data_dir) == Counter()
