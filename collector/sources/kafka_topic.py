"""Source: a Kafka topic of audit records, as one consumer group. Made for AKS: its diagnostic
settings stream the `kube-audit` and `kube-audit-admin` logs to an Azure Event Hub, whose
endpoint speaks the Kafka protocol (SASL PLAIN over TLS on port 9093, user `$ConnectionString`,
the hub's connection string as the password). Any Kafka topic of audit lines works too.

Azure Monitor sends each message as `{"records": [record, ...]}`: every record becomes one raw
record (re-encoded as JSON: one diagnostic record, whose `properties.log` holds the audit Event,
which the k8s-audit parser reads). Any other message goes as it is, and the parser judges it
(a message that is not JSON is dead-lettered with its reason, never dropped).

Offsets are committed in commit(), after the records are durable on the bus, so a restart
resumes after the last published message; a read() that follows a read() without commit() (the
batch failed) rewinds to the committed offsets, so the same records come again. The records of
one message are handed out together.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from ctrail.bus.kafka_config import KafkaBusConfig, KafkaSecurity
from ctrail.components import RawRecord
from ctrail.errors import ConfigError
from ctrail.secrets import SecretRef, resolve_secret

if TYPE_CHECKING:
    from ctrail.bus.kafka_reader import KafkaTopicReader, TopicRecord

EVENT_HUBS_PORT = 9093
EVENT_HUBS_USER = "$ConnectionString"          # Event Hubs' documented SASL PLAIN user name


class KafkaTopicConfig(BaseModel):
    """Read a Kafka topic: AKS audit logs on an Azure Event Hub's Kafka endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["kafka"] = "kafka"
    event_hubs_connection_string: SecretRef | None = Field(
        None, description="The Event Hubs namespace's (or hub's) connection string, "
        "`Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...`:"
        " SASL PLAIN over TLS as `$ConnectionString`, brokers NS.servicebus.windows.net:9093.")
    bootstrap_servers: str | None = Field(
        None, description="host:port[,...]; default: from the connection string.")
    topic: str | None = Field(
        None, description="The topic (the Event Hub's name); default: the connection "
        "string's EntityPath.")
    security: KafkaSecurity | None = Field(
        None, description="TLS and SASL for a Kafka that is not Event Hubs.")
    ca_file: Path | None = Field(
        None, description="With a connection string: the CA of the brokers' certificates "
        "(system CAs when absent).")
    group_id: str = Field("containertrail", min_length=1, description="The consumer group.")
    format: Literal["k8s-audit", "falco", "docker-events", "container-log"] = Field(
        "k8s-audit", description="The parser of the records (a `--source` name).")
    poll_timeout_secs: PositiveFloat = Field(1.0, description="How long one read waits.")
    connect_timeout_secs: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> "KafkaTopicConfig":
        if self.event_hubs_connection_string is None:
            if self.bootstrap_servers is None or self.topic is None:
                raise ValueError("give event_hubs_connection_string, or bootstrap_servers "
                                 "and topic")
        elif self.security is not None:
            raise ValueError("a connection string sets the security itself: give ca_file "
                             "instead of security")
        return self

    @property
    def parser_name(self) -> str:
        return self.format

    def bus_config(self) -> tuple[KafkaBusConfig, str]:
        """The client settings and the topic. Raises ConfigError."""
        servers, topic, security = self.bootstrap_servers, self.topic, self.security
        if self.event_hubs_connection_string is not None:
            parts = connection_string_parts(
                resolve_secret(self.event_hubs_connection_string).get_secret_value())
            servers = servers or f"{parts['host']}:{EVENT_HUBS_PORT}"
            topic = topic or parts.get("entity")
            security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN",
                                     username=EVENT_HUBS_USER, ca_file=self.ca_file,
                                     password=self.event_hubs_connection_string)
        if not topic:
            raise ConfigError("kafka source: no topic, and the connection string has no "
                              "EntityPath")
        return KafkaBusConfig(bootstrap_servers=servers or "", security=security,
                              client_id="ctrail-source",
                              connect_timeout_secs=self.connect_timeout_secs), topic

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> "KafkaTopicSource":
        from ctrail.bus.kafka_reader import KafkaTopicReader

        config, topic = self.bus_config()
        return KafkaTopicSource(KafkaTopicReader(config, topic, self.group_id), topic,
                                self.poll_timeout_secs, max_record_bytes)


def connection_string_parts(text: str) -> dict[str, str]:
    """The namespace host and the EntityPath of an Event Hubs connection string.
    Raises ConfigError (without the string: it holds the key)."""
    fields = dict(part.split("=", 1) for part in text.strip().split(";") if "=" in part)
    match = re.fullmatch(r"sb://([A-Za-z0-9.-]+)/?", fields.get("Endpoint", ""))
    if match is None or "SharedAccessKey" not in fields:
        raise ConfigError("event_hubs_connection_string is not an Event Hubs connection string "
                          "(Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=...;"
                          "SharedAccessKey=...)")
    parts = {"host": match.group(1)}
    if fields.get("EntityPath"):
        parts["entity"] = fields["EntityPath"]
    return parts


class KafkaTopicSource:
    def __init__(self, reader: "KafkaTopicReader", topic: str, poll_timeout_secs: float,
                 max_record_bytes: int) -> None:
        self.reader, self.topic, self.timeout = reader, topic, poll_timeout_secs
        self.cap = max_record_bytes
        self._position: dict[str, tuple[int, int]] = {}    # origin -> (partition, offset)
        self._handed_out = False

    def read(self, max_records: int) -> list[RawRecord]:
        if self._handed_out:                  # that batch failed: the same records again
            self.reader.rewind()
            self._position.clear()
        messages = self.reader.poll(max_records, self.timeout)
        received = datetime.now(timezone.utc)
        records = [record for message in messages
                   for record in self._records(message, received)]
        self._handed_out = bool(records)
        return records

    def commit(self, records: Sequence[RawRecord]) -> None:
        self._handed_out = False
        following: dict[int, int] = {}
        for record in records:
            partition, offset = self._position.pop(record.origin)
            following[partition] = max(following.get(partition, 0), offset + 1)
        self.reader.commit(following)

    def close(self) -> None:
        self.reader.close()

    def _records(self, message: "TopicRecord", received: datetime) -> list[RawRecord]:
        where = f"kafka {self.topic}/{message.partition}@{message.offset}"
        stream = f"{self.topic}/{message.partition}"
        parts = [orjson.dumps(r) for r in azure_records(message.value)] or [message.value]
        records = []
        for index, data in enumerate(parts):
            origin = where if len(parts) == 1 else f"{where}#{index}"
            self._position[origin] = (message.partition, message.offset)
            records.append(RawRecord(data[:self.cap], origin, received, len(data) > self.cap,
                                     stream=stream))
        return records


def azure_records(value: bytes) -> list[Any]:
    """The records of an Azure Monitor message (`{"records": [...]}`), else []."""
    if not value.startswith(b"{") or b'"records"' not in value[:64]:
        return []
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    records = doc.get("records") if isinstance(doc, dict) else None
    return records if isinstance(records, list) and len(doc) == 1 else []
