"""Source: Falco's http_output (one JSON alert per POST; `json_output: true` in falco.yaml).

Falco cannot add headers to its requests, so it authenticates with a client certificate
(`http_output.mtls: true`, checked against `client_ca_file`), or with a token as the password
of the URL's user info (`https://falco:TOKEN@host:8481/`, which libcurl sends as HTTP Basic).
Falcosidekick's webhook output can send `Authorization: Bearer TOKEN` instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ctrail.runtime.http import ListenerConfig


class FalcoHttpConfig(ListenerConfig):
    """Receive Falco alerts from http_output (or Falcosidekick's webhook output)."""

    type: Literal["falco_http"] = "falco_http"
    port: int = Field(8481, ge=0, le=65535)
    max_body_bytes: PositiveInt = 1024 * 1024       # one alert; a few KB in practice

    @property
    def parser_name(self) -> str:
        return "falco"
