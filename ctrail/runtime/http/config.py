"""ListenerConfig: the keys every webhook source shares, and how they build a listener."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.errors import ConfigError
from ctrail.runtime.http.listener import HttpListener
from ctrail.secrets import SecretRef, resolve_secret


class ListenerConfig(BaseModel):
    """Keys every webhook source shares: where to listen, who may post, and the limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    token: SecretRef | None = Field(None, description="Bearer token the sender presents.")
    tokens: tuple[SecretRef, ...] = Field((), description="More accepted tokens (rotation).")
    allow_unauthenticated: bool = Field(
        False, description="Accept requests without a token (only behind a trusted proxy).")
    tls_cert_file: Path | None = Field(None, description="Serve HTTPS with this PEM chain.")
    tls_key_file: Path | None = Field(None, description="Its key (else in tls_cert_file).")
    client_ca_file: Path | None = Field(
        None, description="Require a client certificate signed by this CA (mutual TLS).")
    client_names: tuple[str, ...] = Field(
        (), description="Accept only client certificates with one of these CNs or DNS names.")
    max_body_bytes: PositiveInt = 1024 * 1024
    max_queued_requests: PositiveInt = 64
    max_connections: PositiveInt = 64
    ack_timeout_secs: PositiveFloat = 30.0
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

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> HttpListener:
        refs = (*([self.token] if self.token is not None else []), *self.tokens)
        if not refs and self.client_ca_file is None and not self.allow_unauthenticated:
            raise ConfigError(f"sources.{name}: the webhook needs a token ({{env: NAME}} or "
                              "{file: PATH}), a client_ca_file, or allow_unauthenticated: true")
        tokens = [resolve_secret(ref).get_secret_value().encode() for ref in refs]
        try:
            return HttpListener(self, name, tokens, tls_context(self, name))
        except OSError as exc:
            raise ConfigError(f"sources.{name}: cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None


def tls_context(config: ListenerConfig, name: str) -> ssl.SSLContext | None:
    if config.tls_cert_file is None:
        if config.tls_key_file or config.client_ca_file or config.client_names:
            raise ConfigError(f"sources.{name}: tls_key_file, client_ca_file and client_names "
                              "need tls_cert_file")
        return None
    if config.client_names and config.client_ca_file is None:
        raise ConfigError(f"sources.{name}: client_names needs client_ca_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        if config.client_ca_file is not None:
            context.load_verify_locations(cafile=config.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"sources.{name}: cannot load the TLS files: {exc}") from None
    return context
