"""The process's own health: GET /healthz, /readyz and Prometheus /metrics.

Served by `ctrail run` and every `ctrail worker` when `ops:` is configured. Like every endpoint
we open it is authenticated: a bearer token (Prometheus' `authorization` scrape setting, or a
probe's header), unless `allow_unauthenticated: true` is set for a private network. It is served
by the webhooks' bounded server (ctrail.runtime.http.server), with the same keys: TLS, header
and request deadlines, a connection cap in all and per client address, a request rate per
client; the credential is checked from the headers alone (a GET has no body to read).

  /healthz   200 while every thread of the process is alive, else 503 (restart me)
  /readyz    200 while no stage is backing off from a failing dependency, else 503
             (Kafka or the store is down: keep me, but do not count on me). Sources silent
             for longer than their quiet period (CT-OPS-001) are named in the body, one line
             each, without failing the probe: a webhook's sender cannot come back to a
             receiver taken out of its Service for being silent. So is what the intake spool
             holds that Kafka has not acknowledged yet
  /metrics   counters per stage (records in, out, dead-lettered, retries), consumer lag,
             alerts raised by rule and severity, the notify outbox per receiver, and the
             intake spool's backlog (records, bytes, age of the oldest)
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Callable

from pydantic import Field, PositiveInt

from ctrail.errors import ConfigError
from ctrail.runtime.http.auth import certificate_names, presented_credential, token_matches
from ctrail.runtime.http.config import ServerConfig, tls_context, warn_if_exposed
from ctrail.runtime.http.server import BoundedHandler, Server
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import SecretRef, resolve_secret

log = logging.getLogger(__name__)

COUNTERS = (("received", "records a stage consumed"), ("sent", "records a stage produced"),
            ("dead_lettered", "records a stage dead-lettered (store: refused by the store)"),
            ("retries", "batches a stage retried after a failure (e.g. 429 or 5xx)"))


class OpsConfig(ServerConfig):
    """Where /healthz, /readyz and /metrics are served, and who may read them; the limits are
    the webhook listener's keys, smaller (a few probes and scrapers, not a fleet of senders)."""

    port: int = Field(9464, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token probes and Prometheus send.")
    allow_unauthenticated: bool = Field(
        False, description="Serve without a token (only on a private network).")
    max_connections: PositiveInt = 32
    max_connections_per_client: PositiveInt = 8

    def build(self, telemetry: Telemetry, alive: Callable[[], bool]) -> OpsServer:
        if self.token is None and self.client_ca_file is None and not self.allow_unauthenticated:
            raise ConfigError("ops: needs a token ({env: NAME} or {file: PATH}), a "
                              "client_ca_file, or allow_unauthenticated: true")
        token = resolve_secret(self.token).get_secret_value().encode() if self.token else None
        tls = tls_context(self, "ops")
        warn_if_exposed("ops", self.host, tls is not None, self.allow_unauthenticated)
        try:
            return OpsServer(self, token, telemetry, alive, tls)
        except OSError as exc:
            raise ConfigError(f"ops: cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None


class OpsServer:
    def __init__(self, config: OpsConfig, token: bytes | None, telemetry: Telemetry,
                 alive: Callable[[], bool], tls: ssl.SSLContext | None = None) -> None:
        self.config, self.token, self.telemetry, self.alive = config, token, telemetry, alive
        self.server = Server((config.host, config.port), _handler(self), config, tls, "ops")
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.2,),
                                        name="ops-http", daemon=True)
        self._thread.start()
        log.info("Serving /healthz, /readyz and /metrics.",
                 extra={"host": config.host, "port": self.port, "tls": tls is not None})

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def refusal(self, authorization: str | None, cert: dict[str, object] | None
                ) -> tuple[int, str] | None:
        """Why a request is refused (401, 403), or None to answer it."""
        if self.token is not None and not token_matches(presented_credential(authorization),
                                                        [self.token]):
            return 401, "unauthorized\n"
        names = self.config.client_names
        if names and not certificate_names(cert) & set(names):
            return 403, "client certificate not allowed\n"
        return None

    def answer(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for a GET of `path`."""
        if path == "/healthz":
            return (200, "text/plain", "ok\n") if self.alive() else (503, "text/plain", "dead\n")
        if path == "/readyz":
            failing = self.telemetry.failing()
            silent = "".join(f"silent source: {source} ({', '.join(sorted(c for c, s in clocks.items() if s))} time)\n"
                             for source, clocks in self.telemetry.silent().items()
                             if any(clocks.values()))
            notes = silent + _spool_backlog_line(self.telemetry)    # neither fails the probe
            if self.alive() and not failing:
                return 200, "text/plain", "ready\n" + notes
            return 503, "text/plain", (f"not ready: {', '.join(failing) or 'a thread died'}\n"
                                       + notes)
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", prometheus_text(self.telemetry)
        return 404, "text/plain", "not found\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus_text(telemetry: Telemetry) -> str:
    stages = telemetry.snapshot()
    lines: list[str] = []
    for counter, help_text in COUNTERS:
        lines += [f"# HELP ctrail_stage_{counter}_total {help_text}",
                  f"# TYPE ctrail_stage_{counter}_total counter"]
        lines += [f'ctrail_stage_{counter}_total{{stage="{name}"}} {values[counter]}'
                  for name, values in sorted(stages.items())]
    lines += ["# HELP ctrail_consumer_lag what a stage's group has not yet committed "
              "(records on Kafka, bytes on the local log)", "# TYPE ctrail_consumer_lag gauge"]
    lines += [f'ctrail_consumer_lag{{stage="{name}"}} {lag}'
              for name, lag in sorted(telemetry.lags().items())]
    lines += ["# HELP ctrail_alerts_total alerts raised (after suppression), by rule and "
              "severity", "# TYPE ctrail_alerts_total counter"]
    lines += [f'ctrail_alerts_total{{rule="{_label(rule)}",severity="{_label(severity)}"}} {n}'
              for (rule, severity), n in sorted(telemetry.alerts().items())]
    lines += ["# HELP ctrail_source_silent 1 while a source that was sending is silent for "
              "longer than its quiet period (CT-OPS-001), by clock (arrival or event time)",
              "# TYPE ctrail_source_silent gauge"]
    lines += [f'ctrail_source_silent{{source="{_label(source)}",clock="{clock}"}} {int(silent)}'
              for source, clocks in sorted(telemetry.silent().items())
              for clock, silent in sorted(clocks.items())]
    described: set[str] = set()
    for sample in sorted(telemetry.samples(), key=lambda s: (s.name, sorted(s.labels.items()))):
        name = f"ctrail_{sample.name}"
        if name not in described:
            described.add(name)
            lines += [f"# HELP {name} {sample.help}", f"# TYPE {name} {sample.kind}"]
        labels = ",".join(f'{key}="{_label(value)}"' for key, value in sorted(sample.labels.items()))
        lines.append(f"{name}{{{labels}}} {sample.value:g}" if labels
                     else f"{name} {sample.value:g}")
    return "\n".join(lines) + "\n"


def _spool_backlog_line(telemetry: Telemetry) -> str:
    """What the intake spool holds for Kafka, when it holds anything: named in /readyz without
    failing it (intake still answers its senders; the spool is there for Kafka's absence)."""
    figures = {s.name: s.value for s in telemetry.samples() if s.name.startswith("intake_spool_")}
    if not figures.get("intake_spool_records"):
        return ""
    return (f"intake spool: {figures['intake_spool_records']:g} records "
            f"({figures['intake_spool_bytes']:g} bytes) not yet shipped to Kafka, the oldest "
            f"for {figures['intake_spool_oldest_record_age_seconds']:g} s\n")


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _handler(ops: OpsServer) -> type[BoundedHandler]:
    class Handler(BoundedHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if (refusal := ops.refusal(self.headers.get("Authorization"),
                                       self.peer_certificate())) is not None:
                return self.refuse(*refusal)
            if self.headers.get("Content-Length", "0").strip() != "0" or \
                    self.headers.get("Transfer-Encoding") is not None:
                return self.refuse(400, "a GET has no body\n")  # unread: would be a request
            status, content_type, body = ops.answer(self.path.split("?", 1)[0])
            self.send(status, content_type, body.encode())

        def handle_expect_100(self) -> bool:
            return True                          # no body to invite: a GET with one is refused

        def _not_allowed(self) -> None:
            self.refuse(405, "only GET is served\n")

        do_POST = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed  # noqa: N815

        def refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
            headers = {"WWW-Authenticate": 'Bearer realm="ContainerTrail"'} if status == 401 \
                else {"Allow": "GET"} if status == 405 else {}
            if status in (429, 503):
                headers["Retry-After"] = str(retry_after or ops.config.retry_after_secs)
            text = message if message.endswith("\n") else message + "\n"
            self.send(status, "text/plain", text.encode(), headers, close=True)

    return Handler
