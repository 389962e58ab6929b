"""Source: Harbor project webhooks (HTTP notify type; Default or CloudEvents payload format).

Harbor sends the policy's "Auth Header" value, as typed, in `Authorization`: set it to
`Bearer TOKEN` (or the bare TOKEN) with the token here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ctrail.runtime.http import ListenerConfig


class HarborWebhookConfig(ListenerConfig):
    """Receive Harbor webhook events (a project's Webhooks > Endpoint URL)."""

    type: Literal["harbor_webhook"] = "harbor_webhook"
    port: int = Field(8483, ge=0, le=65535)
    max_body_bytes: PositiveInt = 1024 * 1024       # one event per request

    @property
    def parser_name(self) -> str:
        return "harbor"
