"""Source: a Google Cloud Pub/Sub pull subscription: GKE's Cloud Audit Logs, routed by a Cloud
Logging sink to a Pub/Sub topic (each message one LogEntry as JSON, `protoPayload` holding the
AuditLog, which the k8s-audit parser reads), where users cannot point kube-apiserver at a
webhook.

Messages are pulled synchronously with the official client (google-cloud-pubsub, the `gcp`
extra) and acknowledged in commit(), after the records are durable on the bus: what was not
acknowledged is delivered again by Pub/Sub, after a restart too. A read() that follows a read()
without commit() (the batch failed) gives the unacknowledged messages back at once (ack deadline
0), so they come again. Pub/Sub delivers at least once: a message redelivered after its ack was
lost has the same event id, and the store keeps one.

The client honours PUBSUB_EMULATOR_HOST, Google's documented switch to the Pub/Sub emulator.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.components import RawRecord
from ctrail.errors import ConfigError


class GcpPubSubConfig(BaseModel):
    """Pull a Pub/Sub subscription: GKE audit logs routed by a Cloud Logging sink."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["gcp_pubsub"] = "gcp_pubsub"
    subscription: str = Field(pattern=r"^projects/[^/]+/subscriptions/[^/]+$",
                              description="projects/PROJECT/subscriptions/NAME.")
    credentials_file: Path | None = Field(
        None, description="A service account key (JSON); default: Application Default "
        "Credentials (Workload Identity on GKE).")
    max_messages: PositiveInt = Field(500, le=1000, description="Messages per pull.")
    pull_timeout_secs: PositiveFloat = Field(5.0, description="How long one pull may wait.")

    @property
    def parser_name(self) -> str:
        return "k8s-audit"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "GcpPubSubSource":
        return GcpPubSubSource(self, subscriber_client(self), max_record_bytes)


def subscriber_client(config: GcpPubSubConfig) -> Any:
    try:
        from google.cloud import pubsub_v1  # type: ignore[import-untyped]
        from google.oauth2 import service_account
    except ImportError:
        raise ConfigError("the gcp_pubsub source needs google-cloud-pubsub: pip install "
                          "'containertrail[gcp]'") from None
    if config.credentials_file is None:
        return pubsub_v1.SubscriberClient()
    try:
        credentials = service_account.Credentials.from_service_account_file(
            str(config.credentials_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"gcp_pubsub: cannot use credentials_file "
                          f"{config.credentials_file}: {type(exc).__name__}") from None
    return pubsub_v1.SubscriberClient(credentials=credentials)


class GcpPubSubSource:
    def __init__(self, config: GcpPubSubConfig, client: Any, max_record_bytes: int) -> None:
        self.config, self.client, self.cap = config, client, max_record_bytes
        self._ack_ids: dict[str, str] = {}        # origin -> ack id, until acknowledged
        self._handed_out: list[str] = []

    def read(self, max_records: int) -> list[RawRecord]:
        from google.api_core import exceptions

        if self._handed_out:                       # that batch failed: give it back now
            self._give_back(self._handed_out)
        try:
            response = self.client.pull(subscription=self.config.subscription,
                                        max_messages=min(max_records, self.config.max_messages),
                                        timeout=self.config.pull_timeout_secs)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []                              # nothing came in time; pull again
        received = datetime.now(timezone.utc)
        records = []
        for message in response.received_messages:
            data = bytes(message.message.data)
            origin = f"pubsub {self.config.subscription} {message.message.message_id}"
            self._ack_ids[origin] = message.ack_id
            records.append(RawRecord(data[:self.cap], origin, received, len(data) > self.cap))
        self._handed_out = [r.origin for r in records]
        return records

    def commit(self, records: Sequence[RawRecord]) -> None:
        ack_ids = [self._ack_ids.pop(r.origin) for r in records if r.origin in self._ack_ids]
        if ack_ids:
            self.client.acknowledge(subscription=self.config.subscription, ack_ids=ack_ids)
        self._handed_out = []

    def close(self) -> None:
        if self._ack_ids:                          # read, never stored: redelivered at once
            self._give_back(list(self._ack_ids))
        self.client.close()

    def _give_back(self, origins: list[str]) -> None:
        ack_ids = [self._ack_ids.pop(o) for o in origins if o in self._ack_ids]
        if ack_ids:
            self.client.modify_ack_deadline(subscription=self.config.subscription,
                                            ack_ids=ack_ids, ack_deadline_seconds=0)
        self._handed_out = []
