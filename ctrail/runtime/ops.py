"""The process's own health: GET /healthz, /readyz and Prometheus /metrics.

Served by `ctrail run` and every `ctrail worker` when `ops:` is configured. Like every endpoint
we open it is authenticated: a bearer token (Prometheus' `authorization` scrape setting, or a
probe's header), unless `allow_unauthenticated: true` is set for a private network.

  /healthz   200 while every thread of the process is alive, else 503 (restart me)
  /readyz    200 while no stage is backing off from a failing dependency, else 503
             (Kafka or the store is down: keep me, but do not count on me). Sources silent
             for longer than their quiet period (CT-OPS-001) are named in the body, one line
             each, without failing the probe: a webhook's sender cannot come back to a
             receiver taken out of its Service for being silent
  /metrics   counters per stage (records in, out, dead-lettered, retries), consumer lag,
             alerts raised by rule and severity, and the notify outbox per receiver
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ctrail.errors import ConfigError
from ctrail.runtime.http.auth import presented_credential, token_matches
from ctrail.runtime.telemetry import Telemetry
from ctrail.secrets import SecretRef, resolve_secret

log = logging.getLogger(__name__)
OPS_READ_TIMEOUT_SECS = 10.0

COUNTERS = (("received", "records a stage consumed"), ("sent", "records a stage produced"),
            ("dead_lettered", "records a stage dead-lettered (store: refused by the store)"),
            ("retries", "batches a stage retried after a failure (e.g. 429 or 5xx)"))


class OpsConfig(BaseModel):
    """Where /healthz, /readyz and /metrics are served, and who may read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token probes and Prometheus send.")
    allow_unauthenticated: bool = Field(
        False, description="Serve without a token (only on a private network).")

    def build(self, telemetry: Telemetry, alive: Callable[[], bool]) -> OpsServer:
        if self.token is None and not self.allow_unauthenticated:
            raise ConfigError("ops: needs a token ({env: NAME} or {file: PATH}) or "
                              "allow_unauthenticated: true")
        token = resolve_secret(self.token).get_secret_value().encode() if self.token else None
        try:
            return OpsServer(self, token, telemetry, alive)
        except OSError as exc:
            raise ConfigError(f"ops: cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None


class OpsServer:
    def __init__(self, config: OpsConfig, token: bytes | None, telemetry: Telemetry,
                 alive: Callable[[], bool]) -> None:
        self.token, self.telemetry, self.alive = token, telemetry, alive
        self.server = ThreadingHTTPServer((config.host, config.port), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.2,),
                                        name="ops-http", daemon=True)
        self._thread.start()
        log.info("Serving /healthz, /readyz and /metrics.",
                 extra={"host": config.host, "port": self.port})

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def answer(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for a GET of `path`."""
        if path == "/healthz":
            return (200, "text/plain", "ok\n") if self.alive() else (503, "text/plain", "dead\n")
        if path == "/readyz":
            failing = self.telemetry.failing()
            silent = "".join(f"silent source: {source} ({', '.join(sorted(c for c, s in clocks.items() if s))} time)\n"
                             for source, clocks in self.telemetry.silent().items()
                             if any(clocks.values()))
            if self.alive() and not failing:
                return 200, "text/plain", "ready\n" + silent
            return 503, "text/plain", (f"not ready: {', '.join(failing) or 'a thread died'}\n"
                                       + silent)
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


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _handler(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # A read that waits longer ends the connection: a half-open request (or an idle
        # kept-alive one) no longer holds its thread forever.
        timeout = OPS_READ_TIMEOUT_SECS

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if ops.token is not None and not token_matches(
                    presented_credential(self.headers.get("Authorization")), [ops.token]):
                self._send(401, "text/plain", "unauthorized\n",
                           {"WWW-Authenticate": 'Bearer realm="ctrail"'})
                return
            self._send(*ops.answer(self.path.split("?", 1)[0]))

        def _send(self, status: int, content_type: str, body: str,
                  headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass                                   # scrapes every 15 s would flood the log
    return Handler
