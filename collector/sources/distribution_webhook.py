"""Source: Docker Distribution (registry:2, CNCF distribution) notifications.

The registry POSTs envelopes (`{"events": [...]}`, media type
application/vnd.docker.distribution.events.v2+json) with the `headers` of its
`notifications.endpoints` entry; `Authorization: [Bearer TOKEN]` there is the token here. The
registry retries a failed envelope until it succeeds, so an envelope that cannot parse is
dead-lettered and answered 200 rather than refused forever.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ctrail.runtime.http import ListenerConfig


class DistributionWebhookConfig(ListenerConfig):
    """Receive a Distribution registry's notifications (notifications.endpoints[].url)."""

    type: Literal["distribution_webhook"] = "distribution_webhook"
    port: int = Field(8482, ge=0, le=65535)
    max_body_bytes: PositiveInt = 4 * 1024 * 1024   # an envelope holds a batch of events

    @property
    def parser_name(self) -> str:
        return "registry"
