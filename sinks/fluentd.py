"""Sink: our events and alerts into a Fluentd (or Fluent Bit) `forward` input, via fluent-logger.

Each item is one Message-mode entry: tag `<tag_prefix>.events` or `<tag_prefix>.alerts`, time
the item's @timestamp as EventTime (nanoseconds), record the ECS document as we store it, so
`event.id` travels with it and a receiver can drop the duplicates that a retry may send.

fluent-logger speaks plain forward only: no TLS, no shared-key handshake, no acks. So:
- point it at a receiver on a trusted network (a local Fluentd or Fluent Bit that forwards on
  with TLS and shared_key), never across one;
- delivery is at-least-once for everything the socket refused (the stage retries the batch),
  but an entry written into a connection the receiver has just dropped can be lost: without
  acks the sender cannot know. Use the Elasticsearch store for the audit trail itself.
"""

from __future__ import annotations

import socket
from typing import Literal, Sequence

import orjson
from fluent.sender import EventTime, FluentSender
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from ctrail.bus.codec import encode
from ctrail.components import WriteResult
from ctrail.errors import Retryable, Unavailable
from ctrail.event import Alert, Event, Rejection


class FluentdConfig(BaseModel):
    """Forward events and alerts to Fluentd (`outputs:` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fluentd"] = "fluentd"
    host: str = "127.0.0.1"
    port: int = Field(24224, ge=1, le=65535)
    tag_prefix: str = Field("containertrail", min_length=1,
                            description="Tags are <tag_prefix>.events and <tag_prefix>.alerts.")
    timeout_secs: PositiveFloat = 3.0

    def build(self) -> "FluentdSink":
        return FluentdSink(self)


def fluent_entry(item: Event | Alert | Rejection) -> tuple[str, EventTime, dict[str, object]]:
    """(tag label, time, record) for one item. Pure."""
    label = "alerts" if isinstance(item, Alert) else (
        "dead_letters" if isinstance(item, Rejection) else "events")
    moment = item.timestamp
    seconds = int(moment.timestamp())
    return label, EventTime(seconds, moment.microsecond * 1000), orjson.loads(encode(item))


class FluentdSink:
    def __init__(self, config: FluentdConfig) -> None:
        self.config = config
        # forward_packet_error=False: a record fluent-logger cannot pack raises instead of
        # being replaced by its "Can't output to log" stand-in.
        self.sender = FluentSender(config.tag_prefix, host=config.host, port=config.port,
                                   timeout=config.timeout_secs, nanosecond_precision=True,
                                   forward_packet_error=False)

    def write(self, items: Sequence[Event | Alert | Rejection]) -> WriteResult:
        for item in items:
            label, when, record = fluent_entry(item)
            if not self.sender.emit_with_time(label, when, record):
                error = self.sender.last_error
                self.sender.clear_last_error()
                # The runner re-sends the whole batch; fluent-logger's own buffer of what it
                # could not send would only send it twice.
                self.sender.pendings = None
                raise Retryable(f"fluentd {self.config.host}:{self.config.port}: {error}")
        return WriteResult(delivered=len(items))

    def check(self) -> None:
        try:
            socket.create_connection((self.config.host, self.config.port),
                                     timeout=self.config.timeout_secs).close()
        except OSError as exc:
            raise Unavailable(f"fluentd {self.config.host}:{self.config.port}: {exc}") from None

    def close(self) -> None:
        self.sender.close()
