"""The keys every HTTP server we open shares (ServerConfig: the webhook sources and the ops
server), the webhook sources' own (ListenerConfig), and how they build a server."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.errors import ConfigError
from ctrail.runtime.http.listener import HttpListener
from ctrail.secrets import SecretRef, resolve_secret

log = logging.getLogger(__name__)


class ServerConfig(BaseModel):
    """Where to listen, who may connect, TLS, and the limits that keep strangers from taking
    the threads and connections every client shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token the client presents.")
    allow_unauthenticated: bool = Field(
        False, description="Accept requests without a token (only behind a trusted proxy).")
    tls_cert_file: Path | None = Field(None, description="Serve HTTPS with this PEM chain.")
    tls_key_file: Path | None = Field(None, description="Its key (else in tls_cert_file).")
    client_ca_file: Path | None = Field(
        None, description="Require a client certificate signed by this CA (mutual TLS).")
    client_names: tuple[str, ...] = Field(
        (), description="Accept only client certificates with one of these CNs or DNS names.")
    max_connections: PositiveInt = 64
    read_timeout_secs: PositiveFloat = Field(10.0, description="Per socket read or write.")
    header_timeout_secs: PositiveFloat = Field(
        10.0, description="From a request's first byte (or a kept-alive connection's last "
                          "answer) to the end of its headers; then the connection is closed.")
    request_timeout_secs: PositiveFloat = Field(
        60.0, description="Whole request (headers and body); then the connection is closed.")
    max_header_bytes: PositiveInt = Field(
        32 * 1024, description="Request line and headers together (431 above it).")
    max_headers: PositiveInt = Field(64, description="Header fields per request (431 above).")
    max_connections_per_client: PositiveInt = Field(
        16, description="Open connections from one address (429 above it).")
    max_requests_per_client_per_sec: PositiveFloat = Field(
        50.0, description="Sustained requests from one address (429 with Retry-After above "
                          "it); kube-apiserver's webhook sends at most 10 batches a second.")
    max_request_burst_per_client: PositiveInt = Field(
        100, description="Requests one address may send at once before the rate applies.")
    retry_after_secs: PositiveInt = 1


class ListenerConfig(ServerConfig):
    """Keys every webhook source shares: where to listen, who may post, and the limits."""

    token: SecretRef | None = Field(None, description="Bearer token the sender presents.")
    tokens: tuple[SecretRef, ...] = Field((), description="More accepted tokens (rotation).")
    max_body_bytes: PositiveInt = 1024 * 1024
    max_queued_requests: PositiveInt = 64
    ack_timeout_secs: PositiveFloat = 30.0

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> HttpListener:
        refs = (*([self.token] if self.token is not None else []), *self.tokens)
        if not refs and self.client_ca_file is None and not self.allow_unauthenticated:
            raise ConfigError(f"sources.{name}: the webhook needs a token ({{env: NAME}} or "
                              "{file: PATH}), a client_ca_file, or allow_unauthenticated: true")
        tokens = [resolve_secret(ref).get_secret_value().encode() for ref in refs]
        tls = tls_context(self, f"sources.{name}")
        warn_if_exposed(f"sources.{name}", self.host, tls is not None, self.allow_unauthenticated)
        try:
            return HttpListener(self, name, tokens, tls)
        except OSError as exc:
            raise ConfigError(f"sources.{name}: cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None


def tls_context(config: ServerConfig, section: str) -> ssl.SSLContext | None:
    """The server side of TLS 1.2+ (and mutual TLS) from `config`; `section` names it in errors,
    e.g. sources.audit or ops."""
    if config.tls_cert_file is None:
        if config.tls_key_file or config.client_ca_file or config.client_names:
            raise ConfigError(f"{section}: tls_key_file, client_ca_file and client_names "
                              "need tls_cert_file")
        return None
    if config.client_names and config.client_ca_file is None:
        raise ConfigError(f"{section}: client_names needs client_ca_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        if config.client_ca_file is not None:
            context.load_verify_locations(cafile=config.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}: cannot load the TLS files: {exc}") from None
    return context


def warn_if_exposed(section: str, host: str, tls: bool, allow_unauthenticated: bool) -> None:
    """Say so at startup when a listener (HTTP, or the forward input) takes secrets or gives
    answers in the clear beyond this host, or answers anyone: both are for a private network
    only, and the log should say which were chosen (issue 14: plain HTTP on 0.0.0.0 in the
    shipped examples went unnoticed)."""
    if not tls and not is_loopback(host):
        log.warning("Listening without TLS beyond this host: credentials and data travel in "
                    "the clear; set a TLS certificate.", extra={"section": section, "host": host})
    if allow_unauthenticated:
        log.warning("Listening without authentication (allow_unauthenticated: true): anyone "
                    "who reaches the port is served.", extra={"section": section, "host": host})


def is_loopback(host: str) -> bool:
    """True for an address only this host can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                              # a name or 0.0.0.0-like: assume reachable
