"""The webhook listener (ctrail/runtime/http.py) behind every HTTP source, on a real socket, with
the real parsers and the local bus behind it, fed the bodies the real senders post."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector import PARSERS
from collector.sources.distribution_webhook import DistributionWebhookConfig
from collector.sources.falco_http import FalcoHttpConfig
from collector.sources.harbor_webhook import HarborWebhookConfig
from collector.sources.k8s_audit_webhook import K8sAuditWebhookConfig
from ctrail.bus import RAW, Record
from ctrail.bus.codec import RawEntry
from ctrail.bus.local import LocalBus
from ctrail.errors import ConfigError, Unavailable
from ctrail.event import Rejection
from ctrail.runtime.chain import parse_entry
from ctrail.runtime.collect import Collector
from ctrail.runtime.http import HttpListener, ListenerConfig
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import EnvRef

TOKEN = "s3cret-token"
EVENT_LIST = (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
              b'{"kind":"Event","auditID":"a1","verb":"get","stage":"ResponseComplete",'
              b'"requestReceivedTimestamp":"2026-01-01T00:00:00Z"},'
              b'{"kind":"Event","auditID":"a2","verb":"list","stage":"ResponseComplete",'
              b'"requestReceivedTimestamp":"2026-01-01T00:00:01Z"}]}')


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRAIL_TEST_HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("CTRAIL_TEST_HOOK_TOKEN_NEXT", "next-token")


def k8s(**changes: Any) -> K8sAuditWebhookConfig:
    return K8sAuditWebhookConfig(**{"port": 0, "token": EnvRef(env="CTRAIL_TEST_HOOK_TOKEN"),
                                    "ack_timeout_secs": 5, **changes})


@dataclass
class Running:
    listener: HttpListener
    bus: LocalBus
    collector: Collector

    def published(self, topic: str = RAW) -> list[Record]:
        consumer = self.bus.consumer(f"check-{topic}", [topic])
        try:
            return consumer.poll(10_000, timeout_secs=0)
        finally:
            consumer.close()

    def outcome(self) -> tuple[int, int]:
        """What the chain makes of what intake published, as (events, dead letters)."""
        parser = PARSERS[self.collector.format]()
        events, dead = 0, 0
        for record in self.published(RAW):
            parsed = parse_entry(RawEntry.decode(record.value), lambda _format: parser)
            items = [parsed] if isinstance(parsed, Rejection) else parsed
            rejected = sum(isinstance(item, Rejection) for item in items)
            events, dead = events + len(items) - rejected, dead + rejected
        return events, dead

    def accepted(self) -> int:
        return self.outcome()[0]


@contextmanager
def running(config: ListenerConfig, tmp_path: Path, collect: bool = True) -> Iterator[Running]:
    """The listener with a collector behind it, looping as `ctrail run` loops (a failed batch
    is retried after a pause, never fatal)."""
    listener = config.build("hook", tmp_path, 1024 * 1024)
    bus = LocalBus(tmp_path / "bus")
    name = config.parser_name                                    # type: ignore[attr-defined]
    collector = Collector("hook", listener, name, PARSERS[name](), bus.producer(), Telemetry(),
                          100)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                collector.run_once()
            except Unavailable:
                stop.wait(0.05)
    thread = threading.Thread(target=loop, daemon=True)
    if collect:
        thread.start()
    try:
        yield Running(listener, bus, collector)
    finally:
        stop.set()
        if collect:
            thread.join()
        listener.close()
        bus.close()


def post(port: int, body: bytes, token: str | None = TOKEN, headers: dict[str, str] | None = None,
         tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str]]:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls) if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/audit", body=body, headers=sent)
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:                        # refused, the server hung up
            pass
        return received


def test_the_webhook_answers_only_after_the_batch_is_durable(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        status, headers = post(run.listener.port, EVENT_LIST)
        assert status == 200 and headers["X-Request-Id"]
        assert run.accepted() == 2          # published and flushed before the 200


def test_missing_and_wrong_tokens_get_401_and_nothing_is_read(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        status, headers = post(run.listener.port, EVENT_LIST, token=None)
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="ContainerTrail"')
        assert post(run.listener.port, EVENT_LIST, token="s3cret-tokex")[0] == 401
        assert post(run.listener.port, EVENT_LIST, token="")[0] == 401
        assert run.accepted() == 0


def test_every_configured_token_is_accepted_also_as_a_basic_password(tmp_path: Path) -> None:
    config = k8s(tokens=(EnvRef(env="CTRAIL_TEST_HOOK_TOKEN_NEXT"),))
    with running(config, tmp_path) as run:
        assert post(run.listener.port, EVENT_LIST, token="next-token")[0] == 200
        basic = {"Authorization": "Basic " + base64.b64encode(
            f"falco:{TOKEN}".encode()).decode()}          # Falco: https://falco:TOKEN@host/
        assert post(run.listener.port, EVENT_LIST, token=None, headers=basic)[0] == 200
        assert post(run.listener.port, EVENT_LIST, token=None,
                    headers={"Authorization": TOKEN})[0] == 200      # Harbor: the bare value


def test_a_body_over_the_limit_gets_413_declared_or_chunked(tmp_path: Path) -> None:
    with running(k8s(max_body_bytes=4096), tmp_path) as run:
        assert post(run.listener.port, b"{" + b" " * 5000 + b"}")[0] == 413
        chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                   b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b" " * 4096 +
                   b"\r\n1\r\n \r\n0\r\n\r\n")
        assert raw_exchange(run.listener.port, chunked).startswith(b"HTTP/1.1 413 ")
        assert run.outcome() == (0, 0)


def test_a_chunked_body_within_the_limit_is_accepted(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        half = len(EVENT_LIST) // 2
        chunked = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                   b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                   b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, EVENT_LIST[:half],
                                                           len(EVENT_LIST) - half,
                                                           EVENT_LIST[half:]))
        assert raw_exchange(run.listener.port, chunked).startswith(b"HTTP/1.1 200 ")
        assert run.accepted() == 2


def test_a_body_without_length_gets_411_and_other_methods_405(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        no_length = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\n\r\n")
        assert raw_exchange(run.listener.port, no_length).startswith(b"HTTP/1.1 411 ")
        get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        assert b"Allow: POST" in raw_exchange(run.listener.port, get)


def test_a_full_intake_queue_gets_429_with_retry_after(tmp_path: Path) -> None:
    config = k8s(max_queued_requests=1, retry_after_secs=3)
    with running(config, tmp_path, collect=False) as run:
        first: list[int] = []
        waiting = threading.Thread(target=lambda: first.append(post(run.listener.port,
                                                                    EVENT_LIST)[0]))
        waiting.start()                                     # queued; nobody collects yet
        headers_only = http.client.HTTPMessage()
        headers_only["Content-Length"] = str(len(EVENT_LIST))
        deadline = time.monotonic() + 5
        while not run.listener.refusal(f"Bearer {TOKEN}", None, headers_only) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers = post(run.listener.port, EVENT_LIST)
        assert (status, headers["Retry-After"]) == (429, "3")
        run.collector.run_once()                            # the collector catches up
        waiting.join()
        assert first == [200] and run.accepted() == 2


class FailingProducer:
    def send(self, topic: str, key: str, value: bytes) -> None:
        pass

    def flush(self) -> None:
        raise Unavailable("the bus is down")


def test_a_failing_bus_gets_503_with_retry_after_and_recovers(tmp_path: Path) -> None:
    with running(k8s(retry_after_secs=1), tmp_path) as run:
        healthy, run.collector.producer = run.collector.producer, FailingProducer()
        status, headers = post(run.listener.port, EVENT_LIST)
        assert (status, headers["Retry-After"]) == (503, "1")
        assert post(run.listener.port, EVENT_LIST)[0] == 503    # refused at once, not queued
        run.collector.producer = healthy
        time.sleep(1.1)
        assert post(run.listener.port, EVENT_LIST)[0] == 200
        assert run.accepted() == 2


def test_a_body_that_can_never_parse_is_dead_lettered_and_answered_200(tmp_path: Path,
                                                                      real_data: Path) -> None:
    with running(k8s(), tmp_path) as run:
        assert post(run.listener.port, b'{"kind":"EventList","items":[')[0] == 200
    harbor = HarborWebhookConfig(port=0, token=EnvRef(env="CTRAIL_TEST_HOOK_TOKEN"))
    with running(harbor, tmp_path / "harbor") as run:
        body = (real_data / "harbor-webhooks/artifact_pushed.cloudevents.invalid-json.txt")
        assert post(run.listener.port, body.read_bytes())[0] == 200
        assert run.outcome() == (0, 1)                      # dead-lettered by the parse step


def test_bad_requests_never_stop_the_listener(tmp_path: Path) -> None:
    with running(k8s(), tmp_path) as run:
        # Not even a request line: the stdlib answers as to HTTP/0.9, a bare error page.
        assert b"400" in raw_exchange(run.listener.port, b"\x16\x03\x01garbage\r\n\r\n")
        short = (b"POST / HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
                 b"\r\nContent-Length: 100\r\n\r\n{}")
        with socket.create_connection(("127.0.0.1", run.listener.port)) as sock:
            sock.sendall(short)                             # then hang up mid-body
        assert post(run.listener.port, EVENT_LIST)[0] == 200


def test_a_client_that_stalls_mid_request_is_disconnected(tmp_path: Path) -> None:
    with running(k8s(request_timeout_secs=0.5), tmp_path) as run:
        started = time.monotonic()
        stalled = (b"POST / HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
                   b"\r\nContent-Length: 100\r\n\r\n{")
        answer = raw_exchange(run.listener.port, stalled)
        assert time.monotonic() - started < 3 and b"200 OK" not in answer
        assert post(run.listener.port, EVENT_LIST)[0] == 200


def test_connections_over_the_limit_get_503(tmp_path: Path) -> None:
    with running(k8s(max_connections=1), tmp_path) as run:
        with socket.create_connection(("127.0.0.1", run.listener.port)):
            time.sleep(0.2)                                 # the idle one holds the only slot
            answer = raw_exchange(run.listener.port, b"")
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
        time.sleep(0.2)
        assert post(run.listener.port, EVENT_LIST)[0] == 200


@pytest.mark.parametrize("config, reason", [
    (K8sAuditWebhookConfig(port=0), "needs a token"),
    (K8sAuditWebhookConfig(port=0, token=EnvRef(env="CTRAIL_TEST_UNSET_TOKEN")),
     "CTRAIL_TEST_UNSET_TOKEN is not set"),
    (FalcoHttpConfig(port=0, allow_unauthenticated=True, client_ca_file=Path("/ca.pem")),
     "need tls_cert_file"),
    (HarborWebhookConfig(port=0, token=EnvRef(env="CTRAIL_TEST_HOOK_TOKEN"),
                         tls_cert_file=Path("/nonexistent.pem")), "cannot load the TLS files"),
])
def test_an_unsafe_or_broken_listener_config_stops_startup(config: ListenerConfig, reason: str,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=reason):
        config.build("hook", tmp_path, 1024)


# --- TLS and mutual TLS, with a CA made here ---------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path                 # signed by another CA
    stranger_key: Path


def _key_and_cert(directory: Path, name: str, subject: str, issuer: tuple[Any, x509.Name] | None,
                  server: bool = False) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer, issuer_name = issuer if issuer else (key, subject_name)
    builder = (x509.CertificateBuilder().subject_name(subject_name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False)
    cert = builder.sign(signer, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _key_and_cert(d, "ca", "ContainerTrail test CA", None)
    _key_and_cert(d, "server", "localhost", (ca_key, ca.subject), server=True)
    _key_and_cert(d, "client", "kube-apiserver", (ca_key, ca.subject))
    other_key, other = _key_and_cert(d, "other-ca", "Someone else's CA", None)
    _key_and_cert(d, "stranger", "kube-apiserver", (other_key, other.subject))
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key", d / "stranger.crt", d / "stranger.key")


def client_tls(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def test_tls_serves_https_and_plain_http_gets_nothing(tmp_path: Path, pki: Pki) -> None:
    config = k8s(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    with running(config, tmp_path) as run:
        assert post(run.listener.port, EVENT_LIST, tls=client_tls(pki))[0] == 200
        assert not raw_exchange(run.listener.port, b"POST / HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 200")
        assert run.accepted() == 2


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path: Path, pki: Pki) -> None:
    config = FalcoHttpConfig(port=0, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                             client_ca_file=pki.ca)        # Falco: http_output.mtls, no token
    alert = b'{"output":"x","priority":"Warning","rule":"r","time":"2026-01-01T00:00:00Z"}'
    with running(config, tmp_path) as run:
        for anonymous in (client_tls(pki), client_tls(pki, pki.stranger_cert, pki.stranger_key)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                post(run.listener.port, alert, token=None, tls=anonymous)
        known = client_tls(pki, pki.client_cert, pki.client_key)
        assert post(run.listener.port, alert, token=None, tls=known)[0] == 200
        assert run.accepted() == 1


def test_a_client_certificate_outside_client_names_gets_403(tmp_path: Path, pki: Pki) -> None:
    config = k8s(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                 client_ca_file=pki.ca, client_names=("falco",))
    with running(config, tmp_path) as run:
        known = client_tls(pki, pki.client_cert, pki.client_key)
        assert post(run.listener.port, EVENT_LIST, tls=known)[0] == 403
    allowed = config.model_copy(update={"client_names": ("kube-apiserver",)})
    with running(allowed, tmp_path / "allowed") as run:
        assert post(run.listener.port, EVENT_LIST, tls=known)[0] == 200


# --- each source, with the body its real sender posts -------------------------------------------

def _distribution_request(real_data: Path) -> tuple[dict[str, str], bytes]:
    """docs_push_http_request.txt as the registry sends it (its Host line is an upstream typo)."""
    text = (real_data / "distribution-notifications/docs_push_http_request.txt").read_bytes()
    head, _, body = text.partition(b"\n\n")
    headers = dict(line.decode().split(": ", 1) for line in head.splitlines()[1:])
    headers.pop("Host")
    headers["Authorization"] = headers["Authorization"].replace("<your token, if needed>", TOKEN)
    return headers, body


def test_each_source_accepts_what_its_sender_posts(tmp_path: Path, real_data: Path) -> None:
    token = EnvRef(env="CTRAIL_TEST_HOOK_TOKEN")
    traces = real_data / "falco-k8saudit-traces/trace_files"
    # Every trace, fal_01_003.json ({"kind": 0}) too: that one item is dead-lettered alone.
    items = [line for f in sorted(traces.glob("*.json"))
             for line in f.read_bytes().splitlines() if line.strip()]
    event_list = (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
                  + b",".join(items) + b"]}")
    alerts = (real_data / "falco-alerts-json/falco_website_alerts.jsonl").read_bytes().split(b"\n")
    dist_headers, envelope = _distribution_request(real_data)
    harbor = (real_data / "harbor-webhooks/artifact_pushed.default.json").read_bytes()
    cases: list[tuple[ListenerConfig, list[tuple[dict[str, str], bytes]], tuple[int, int]]] = [
        (K8sAuditWebhookConfig(port=0, token=token),
         [({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, event_list)],
         (len(items) - 1, 1)),
        (FalcoHttpConfig(port=0, token=token),
         [({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
            "User-Agent": "falcosecurity/falco"}, a) for a in alerts if a.strip()], (19, 0)),
        (DistributionWebhookConfig(port=0, token=token), [(dist_headers, envelope)], (3, 0)),
        (HarborWebhookConfig(port=0, token=token),
         [({"Authorization": TOKEN, "Content-Type": "application/json"}, harbor)], (1, 0)),
    ]
    for index, (config, requests, expected) in enumerate(cases):
        with running(config, tmp_path / str(index)) as run:
            assert [post(run.listener.port, body, token=None, headers=headers)[0]
                    for headers, body in requests] == [200] * len(requests)
            assert run.outcome() == expected, config.type    # type: ignore[attr-defined]


def test_an_audit_batch_above_the_line_limit_is_stored_not_dead_lettered(tmp_path: Path) -> None:
    """kube-apiserver posts up to 400 events a batch: at RequestResponse level that is several
    MiB, above pipeline.max_record_bytes (meant for one log line) but within the listener's own
    limit, so the pipeline takes the listener's limit for its records."""
    from ctrail.runtime.pipeline import Pipeline
    from ctrail.settings import load_settings
    padding = "x" * 10_000
    items = [b'{"kind":"Event","auditID":"big-%d","verb":"get","stage":"ResponseComplete",'
             b'"requestReceivedTimestamp":"2026-01-01T00:00:00Z","requestObject":{"pad":"%s"}}'
             % (i, padding.encode()) for i in range(300)]
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(items) + b"]}"
    settings = load_settings(None, tmp_path / "data")
    assert len(body) > settings.pipeline.max_record_bytes
    pipeline = Pipeline(settings, ("process",))
    listener = k8s().build("hook", tmp_path, settings.pipeline.max_record_bytes)
    collector = pipeline.collector("hook", listener, "k8s-audit")
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [collector.run_once() for _ in iter(stop.is_set, True)],
                              daemon=True)
    thread.start()
    try:
        assert post(listener.port, body)[0] == 200
        stop.set()
        thread.join()
        pipeline.drain()
        assert pipeline.telemetry.stages["collect.hook"].sent == 300
        assert pipeline.telemetry.stages["collect.hook"].dead_lettered == 0
    finally:
        stop.set()
        thread.join()
        listener.close()
        pipeline.close()
