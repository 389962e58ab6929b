"""KafkaBusConfig: the `bus: {type: kafka}` section of the configuration (distributed mode).

This module must not import kafka: settings load it whatever the bus type, and kafka-python is
only needed once a Kafka bus is actually built (`build`, which imports ctrail.bus.kafka then).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from ctrail.secrets import SecretRef

if TYPE_CHECKING:
    from ctrail.bus import Bus
    from ctrail.bus.intake_spool import IntakeSpool
    from ctrail.bus.kafka import KafkaBus

HOURS_PER_DAY = 24


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaTopicPartitions(_Section):
    """Partitions per topic, used only when ContainerTrail creates the topic."""

    raw: PositiveInt = Field(6, description="Partitions of ctrail.raw: the upper bound on process "
                                            "workers (parse, enrich, detect, store) that can "
                                            "share the load.")
    events: PositiveInt = Field(6, description="Partitions of ctrail.events, the stored events "
                                               "(evidence and forward workers; written only when "
                                               "evidence or outputs are configured).")
    alerts: PositiveInt = Field(3, description="Partitions of ctrail.alerts (store, notify, "
                                               "evidence and forward workers).")
    dlq: PositiveInt = Field(3, description="Partitions of ctrail.dlq (store workers).")
    entities: PositiveInt = Field(3, description="Partitions of the compacted ctrail.entities.")
    correlate: PositiveInt = Field(3, description="Partitions of ctrail.correlate (correlate "
                                                  "workers; keyed by correlation group).")


class KafkaTopicRetention(_Section):
    """How long each topic keeps records, used only when ContainerTrail creates the topic.
    ctrail.entities is compacted instead: it keeps the latest fact per key for ever."""

    raw: PositiveInt = Field(7 * HOURS_PER_DAY, description="Hours ctrail.raw keeps the raw "
                             "records intake took in, for the process stage (long enough to "
                             "reprocess after fixing a broken step of the chain).")
    events: PositiveInt = Field(7 * HOURS_PER_DAY, description="Hours ctrail.events keeps the "
                                "stored events it carries to evidence and forward workers.")
    alerts: PositiveInt = Field(30 * HOURS_PER_DAY, description="Hours ctrail.alerts keeps records.")
    dlq: PositiveInt = Field(30 * HOURS_PER_DAY, description="Hours ctrail.dlq keeps dead letters "
                             "(time to fix the cause and run `ctrail dlq replay`).")
    correlate: PositiveInt = Field(7 * HOURS_PER_DAY, description="Hours ctrail.correlate keeps "
                                   "correlation candidates.")


class KafkaSecurity(_Section):
    """TLS and SASL for the connection to the brokers."""

    protocol: Literal["SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        description="Kafka's security.protocol.")
    ca_file: Path | None = Field(None, description="PEM file of the CA that signed the brokers' "
                                                   "certificates (TLS protocols); system CAs when absent.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (SASL protocols).")
    username: str | None = Field(None, description="SASL user name.")
    password: SecretRef | None = Field(
        None, description="SASL password, as a reference: {env: NAME} or {file: PATH}.")

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> "KafkaSecurity":
        if self.protocol.startswith("SASL_") and not (self.sasl_mechanism and self.username
                                                      and self.password):
            raise ValueError(f"{self.protocol} needs sasl_mechanism, username and password")
        return self


class KafkaBusConfig(_Section):
    """Kafka topics and consumer groups (distributed mode): `ctrail worker STAGE` processes
    on any number of hosts share each stage's load."""

    type: Literal["kafka"] = "kafka"
    single_process: ClassVar[bool] = False      # as KafkaBus
    bootstrap_servers: str = Field(
        description="Brokers to bootstrap from, comma separated: `kafka-1:9092,kafka-2:9092`.")
    client_id: str = Field("ctrail", min_length=1,
                           description="Client id the brokers see in their logs and quotas.")
    namespace: str = Field(
        "", pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix of every topic and consumer-group name, so that several pipelines "
                    "can share a cluster: `staging.` gives `staging.ctrail.raw`. Empty by default.")
    partitions: KafkaTopicPartitions = KafkaTopicPartitions()
    replication_factor: PositiveInt = Field(
        1, description="Replicas of each topic ContainerTrail creates; 3 in production. Writes "
                       "wait for all in-sync replicas, at least replication_factor - 1 of them.")
    retention_hours: KafkaTopicRetention = KafkaTopicRetention()
    linger_ms: NonNegativeInt = Field(
        5, description="How long the producer waits to fill a batch before sending it. A stage "
                       "flushes at the end of each batch, which sends at once whatever waits: "
                       "this only groups the records of one batch, it never delays an alert.")
    batch_bytes: PositiveInt = Field(
        256 * 1024, description="Largest batch of records the producer sends to one partition.")
    fetch_min_bytes: PositiveInt = Field(
        1, description="Bytes a broker waits for before it answers a worker's fetch (at most "
                       "fetch_max_wait_ms). 1: a record reaches the next stage as soon as it is "
                       "written (an idle pipeline alerts at once); a busy stage still gets whole "
                       "batches, since what was written while it handled one batch comes back "
                       "in its next fetch.")
    fetch_max_wait_ms: PositiveInt = Field(
        100, le=500, description="How long a broker may hold a fetch that found less than "
                                 "fetch_min_bytes. kafka-python sends one fetch per broker at a "
                                 "time, so a partition whose buffered records a worker has just "
                                 "used up waits for the held fetch to return: this bounds that "
                                 "wait (kafka-python's default is 500), at the cost of an idle "
                                 "worker asking 1000 / fetch_max_wait_ms times a second.")
    delivery_timeout_secs: float = Field(
        120.0, ge=2.0, description="How long a write may take, retries included, before it "
                                   "counts as failed (the stage then backs off and retries).")
    connect_timeout_secs: PositiveFloat = Field(
        10.0, description="How long to wait for the first broker at startup.")
    session_timeout_secs: float = Field(
        45.0, ge=6.0, le=1800.0,
        description="A worker silent for this long is presumed dead; its partitions move to "
                    "the other workers of its stage.")
    security: KafkaSecurity | None = Field(
        None, description="TLS and SASL; plaintext when absent.")
    intake_spool: bool = Field(
        False, description="Intake (`ctrail run`, `ctrail worker collect`) appends what it "
                           "takes to a durable spool in the data directory and answers its "
                           "senders once that is fsynced; a thread ships the spool to "
                           "ctrail.raw. Senders are answered at once while Kafka is slow or "
                           "away, at the cost of the data directory holding acknowledged "
                           "records until they are shipped: turn it on only where the data "
                           "directory is on a persistent volume. Off: intake answers once "
                           "Kafka has acknowledged.")
    intake_min_free_bytes: NonNegativeInt = Field(
        64 * 1024 * 1024,
        description="With intake_spool: intake stops taking records (webhooks answer 503, "
                    "tailers wait) while the data directory's filesystem has less free space "
                    "than this. 0: only a full disk stops it.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_are_host_port(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        bad = [s for s in servers if s.rpartition(":")[0] == "" or
               not s.rpartition(":")[2].isdigit()]
        if bad:
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    def servers(self) -> list[str]:
        return self.bootstrap_servers.split(",")

    def topic_name(self, topic: str) -> str:
        """The Kafka topic behind a bus topic (`ctrail.raw`), with the namespace."""
        return f"{self.namespace}{topic}"

    def group_name(self, group: str) -> str:
        """The consumer group of a stage: `ctrail.process`, with the namespace."""
        return f"{self.namespace}ctrail.{group}"

    def build(self, data_dir: Path | None = None, guest: bool = False) -> "KafkaBus":
        """Connect and create missing topics; raises Unavailable when no broker answers.
        (`data_dir` and `guest` are unused: Kafka keeps topics and offsets on the brokers,
        and any process may produce and consume.)"""
        from ctrail.bus.kafka import KafkaBus  # kafka-python only when a Kafka bus is used

        return KafkaBus(self)

    def open_intake_spool(self, data_dir: Path, bus: "Bus") -> "IntakeSpool | None":
        """See ctrail.bus.BusConfig.open_intake_spool. Opened also with intake_spool off when
        an earlier run left it (its records are still shipped)."""
        from ctrail.bus.intake_spool import DIRECTORY, IntakeSpool

        if not self.intake_spool and not (data_dir / DIRECTORY).exists():
            return None
        return IntakeSpool(data_dir / DIRECTORY, bus, self.intake_min_free_bytes,
                           accepts=self.intake_spool)

    def read_topic(self, data_dir: Path | None, topic: str, reader: str,
                   timeout_secs: float) -> Iterator[bytes]:
        """See ctrail.bus.BusConfig.read_topic (connects for the read, closes after it)."""
        from ctrail.bus.kafka import read_to_end  # kafka-python only when a Kafka bus is used

        return read_to_end(self, topic, reader, timeout_secs)
