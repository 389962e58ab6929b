"""The Kafka bus (distributed mode): the bus protocols on Kafka topics and consumer groups.

The only module that imports kafka (kafka-python). Guarantees, the same as the local log's:
- `flush` returns only when every record sent since the last flush is acknowledged by all
  in-sync replicas (acks=all, idempotent producer); otherwise it raises Unavailable, so the
  stage never commits input whose output was not stored.
- Offsets are committed only by `commit`, synchronously, per partition (auto-commit is off).
- Records of one key land in one partition and keep their order.
- A rebalance that takes a partition away drops what was polled from it but not committed: the
  new owner delivers those records again, and this consumer never commits them.

Every failure to reach the brokers becomes Unavailable with a one-line message that names the
bootstrap servers and what failed; a broker refusing a topic's settings is a ConfigError.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from typing import Any, Final, Iterator, Sequence, TypeVar

# kafka-python 3 reads its protocol schemas with importlib.resources.read_text (and open_text)
# at import time, deprecated on Python 3.11-3.12 and un-deprecated in 3.13: ignore exactly those
# warnings, here only, so that `-W error` runs still work.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated",
                            category=DeprecationWarning)
    import kafka.errors as kafka_errors
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, OffsetSpec
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.producer.future import FutureRecordMetadata
    from kafka.structs import OffsetAndMetadata

from ctrail.bus import ALL_TOPICS, ENTITIES, Record
from ctrail.bus.kafka_config import KafkaBusConfig
from ctrail.errors import ConfigError, Retryable, Unavailable
from ctrail.secrets import resolve_secret

log = logging.getLogger(__name__)
MS_PER_HOUR = 3_600_000
# The broker refused the request as asked: retrying cannot help, the configuration must change.
CONFIG_ERRORS = (kafka_errors.InvalidReplicationFactorError, kafka_errors.InvalidPartitionsError,
                 kafka_errors.InvalidConfigurationError, kafka_errors.InvalidTopicError,
                 kafka_errors.PolicyViolationError, kafka_errors.TopicAuthorizationFailedError)
# The group moved on while we committed: another member owns those partitions now.
LOST_TO_REBALANCE = (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError)
# The largest record our producers send and the topics we create take (max.message.bytes): a
# raw record of up to pipeline.max_record_bytes (1 MiB by default) with its envelope, or the
# dead letter of one (its bytes as escaped JSON text or base64), must fit. Kafka's default of
# 1 MiB holds neither, and a refused record was sent again for ever, holding back its source
# (a tailed file) or the intake spool behind it.
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024


def client_options(config: KafkaBusConfig) -> dict[str, Any]:
    """kafka-python options shared by the admin client, the producers and the consumers."""
    options: dict[str, Any] = {
        "bootstrap_servers": config.servers(), "client_id": config.client_id,
        "bootstrap_timeout_ms": int(config.connect_timeout_secs * 1000)}
    security = config.security
    if security is not None:
        options["security_protocol"] = security.protocol
        if security.ca_file is not None:
            options["ssl_cafile"] = str(security.ca_file)
        if security.sasl_mechanism is not None and security.password is not None:
            options.update(sasl_mechanism=security.sasl_mechanism,
                           sasl_plain_username=security.username,
                           sasl_plain_password=resolve_secret(security.password)
                           .get_secret_value())
    return options


def topic_specs(config: KafkaBusConfig) -> dict[str, dict[str, Any]]:
    """The topics of DESIGN.md as CreateTopics wants them, named with the namespace."""
    replicas = config.replication_factor
    specs: dict[str, dict[str, Any]] = {}
    for topic in ALL_TOPICS:
        short = topic.removeprefix("ctrail.")
        # acks=all means "all in-sync replicas": require more than the leader when we can.
        settings = {"min.insync.replicas": str(max(1, replicas - 1)),
                    "max.message.bytes": str(MAX_MESSAGE_BYTES)}
        if topic == ENTITIES:        # the latest fact per entity, kept until overwritten
            settings["cleanup.policy"] = "compact"
        else:
            settings["cleanup.policy"] = "delete"
            settings["retention.ms"] = str(getattr(config.retention_hours, short) * MS_PER_HOUR)
        specs[config.topic_name(topic)] = {"num_partitions": getattr(config.partitions, short),
                                           "replication_factor": replicas, "configs": settings}
    return specs


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text and text != type(exc).__name__ else type(exc).__name__


@contextmanager
def unavailable(config: KafkaBusConfig, what: str) -> Iterator[None]:
    """Turn kafka-python's errors into ours: one line, no chained traceback."""
    try:
        yield
    except kafka_errors.KafkaError as exc:
        raise Unavailable(f"Kafka at {config.bootstrap_servers}: {what} failed: "
                          f"{_describe(exc)}") from None


def seek_to_committed(consumer: KafkaConsumer) -> None:
    """Back to the committed offset of each partition the consumer holds (the beginning of one
    with none), so records polled but not committed are read again."""
    for tp in consumer.assignment():
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def probe(config: KafkaBusConfig) -> None:
    """Raise Unavailable unless some bootstrap server accepts a TCP connection. kafka-python
    leaks a half-built client (its IO thread and socket) when a constructor fails to bootstrap,
    so the common case, no broker listening, is caught before any client is built."""
    failures: list[str] = []
    for server in config.servers():
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=config.connect_timeout_secs):
                return
        except OSError as exc:
            failures.append(f"{server}: {exc.strerror or type(exc).__name__}")
    raise Unavailable(f"Kafka at {config.bootstrap_servers}: connecting failed: "
                      f"{'; '.join(failures)}")


def ensure_topics(admin: KafkaAdminClient, config: KafkaBusConfig) -> list[str]:
    """Create the missing topics; existing ones are left as they are. Returns those created."""
    with unavailable(config, "creating topics"):
        answer = admin.create_topics(topic_specs(config), raise_errors=False)
    created: list[str] = []
    for topic in answer["topics"]:
        error = kafka_errors.for_code(topic["error_code"])
        if error is kafka_errors.NoError:
            created.append(topic["name"])
        elif error is not kafka_errors.TopicAlreadyExistsError:
            reason = topic["error_message"] or error.__name__
            problem = f"creating topic {topic['name']} failed: {reason}"
            if issubclass(error, CONFIG_ERRORS):
                raise ConfigError(f"Kafka at {config.bootstrap_servers}: {problem}")
            raise Unavailable(f"Kafka at {config.bootstrap_servers}: {problem}")
    if created:                      # a new topic has no leader for a moment: wait for it
        with unavailable(config, "waiting for new topics"):
            admin.wait_for_topics(created, timeout_ms=int(config.connect_timeout_secs * 1000))
        log.info("Created Kafka topics.", extra={"topics": created})
    return created


_Client = TypeVar("_Client", "KafkaBusProducer", "KafkaBusConsumer")


class KafkaBus:
    """The bus of distributed mode; see the module docstring for the guarantees.

    Connects and creates missing topics on construction (Unavailable when no broker answers).
    `close` closes every producer and consumer it made."""

    single_process: Final = False       # workers on any number of hosts share each group

    def __init__(self, config: KafkaBusConfig) -> None:
        self.config = config
        self.options = client_options(config)
        probe(config)
        with unavailable(config, "connecting"):
            self.admin = KafkaAdminClient(**self.options)
        try:
            ensure_topics(self.admin, config)
        except Exception:
            self.admin.close()
            raise
        self._clients: list[KafkaBusProducer | KafkaBusConsumer] = []
        self._lock = threading.Lock()

    def producer(self) -> KafkaBusProducer:
        return self._track(KafkaBusProducer(self))

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaBusConsumer:
        return self._track(KafkaBusConsumer(self, group, topics))

    def compacts(self, topic: str) -> bool:
        return topic == ENTITIES             # created with cleanup.policy=compact

    def group_name(self, group: str) -> str:
        return self.config.group_name(group)

    def written_elsewhere(self, topic: str) -> None:
        pass                                 # any process may produce to a Kafka topic

    def writes(self, topic: str) -> bool:
        return True

    def _track(self, client: _Client) -> _Client:
        with self._lock:
            self._clients.append(client)
        return client

    def group_lag(self, group_id: str, topics: Sequence[str]) -> int:
        """Records of `topics` the group has not committed, over all partitions (not just one
        member's), so a worker that has not joined yet does not report 0."""
        admin = self.admin                       # thread-safe: lag may be asked from any thread
        with unavailable(self.config, f"reading the offsets of group {group_id}"):
            partitions = [TopicPartition(t["name"], p["partition_index"])
                          for t in admin.describe_topics(list(topics)) for p in t["partitions"]]
            committed = admin.list_group_offsets({group_id: partitions}).get(group_id, {})
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
            starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions})
        lag = 0
        for tp in partitions:
            done = committed.get(tp)
            position = max(done.offset if done is not None else -1, starts[tp].offset)
            lag += max(0, ends[tp].offset - position)
        return lag

    def group_members(self, group: str) -> int:
        """How many consumers are members of a stage's group now (0: none, or no such group)."""
        group_id = self.config.group_name(group)
        with unavailable(self.config, f"describing group {group_id}"):
            described = self.admin.describe_groups([group_id]).get(group_id) or {}
        return len(described.get("members") or ())

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self.admin.close()


class KafkaBusProducer:
    """Sends asynchronously in batches; `flush` checks every record's acknowledgement.

    A flush that fails leaves a new kafka-python producer for the next batch: its idempotent
    producer keeps the error of a batch the broker refused (MESSAGE_TOO_LARGE, say) and fails
    every later send with it, so the stage would retry its batch until restarted."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._config = bus.config
        self._producer: KafkaProducer | None = None
        self._pending: list[FutureRecordMetadata] = []
        self._client()                  # an unreachable broker shows at once, not at a send

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            config = self._config
            delivery_ms = int(config.delivery_timeout_secs * 1000)
            with unavailable(config, "starting a producer"):
                self._producer = KafkaProducer(
                    **self._bus.options, acks="all", enable_idempotence=True,
                    linger_ms=config.linger_ms, batch_size=config.batch_bytes,
                    delivery_timeout_ms=delivery_ms,
                    # kafka-python requires delivery > request + linger; retries stay
                    # unbounded within the delivery timeout.
                    request_timeout_ms=min(30_000, (delivery_ms - config.linger_ms) // 2),
                    max_block_ms=delivery_ms, max_request_size=MAX_MESSAGE_BYTES)
        return self._producer

    def send(self, topic: str, key: str, value: bytes) -> None:
        with unavailable(self._config, f"sending to {topic}"):
            self._pending.append(self._client().send(self._config.topic_name(topic),
                                                     key=key.encode(), value=value))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            with unavailable(self._config, f"flushing {len(pending)} records"):
                self._client().flush(timeout=self._config.delivery_timeout_secs + 5)
            failed = [f for f in pending if not f.succeeded()]
            if failed:
                cause = failed[0].exception
                raise Unavailable(f"Kafka at {self._config.bootstrap_servers}: {len(failed)} of "
                                  f"{len(pending)} records were not acknowledged: "
                                  f"{_describe(cause) if cause else 'no answer'}")
        except Unavailable:
            self._discard()             # the caller sends the whole batch again
            raise

    def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)   # abandons what it still holds: sent again
            except Exception as exc:        # its connections are dropped either way
                log.debug("Closing a failed Kafka producer failed.", extra={"error": str(exc)})

    def close(self) -> None:
        self._pending = []
        if self._producer is not None:
            self._producer.close(timeout=self._config.delivery_timeout_secs)


class _OwnershipListener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread, hence the consumer's lock."""

    def __init__(self, consumer: KafkaBusConsumer) -> None:
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._consumer.forget(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.own(assigned)


class KafkaBusConsumer:
    """One member of the stage's consumer group `<namespace>ctrail.<group>`. Not thread-safe
    (except `lag` and `assigned`): one consumer per worker thread.

    A member takes part in a rebalance only inside `poll`, so call it without long pauses:
    kafka-python 3.0.12 throws away a group join that completed between two polls and starts
    another, and a member that pauses between polls can keep its group rebalancing."""

    def __init__(self, bus: KafkaBus, group: str, topics: Sequence[str]) -> None:
        config = bus.config
        self._bus = bus
        self._config = config
        self._group_id = config.group_name(group)
        self._logical = {config.topic_name(t): t for t in topics}
        self._lock = threading.Lock()
        self._owned: set[TopicPartition] = set()
        # Per owned partition, the first offset polled since it was assigned (or rewound):
        # anything below it was polled under an earlier ownership and is not ours to commit.
        self._first_polled: dict[TopicPartition, int] = {}
        session_ms = int(config.session_timeout_secs * 1000)
        with unavailable(config, f"joining consumer group {self._group_id}"):
            self._consumer = KafkaConsumer(
                **bus.options, group_id=self._group_id, enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=session_ms,
                heartbeat_interval_ms=min(3000, session_ms // 3),
                # Answered as soon as a record is written (an idle pipeline alerts at once);
                # a busy stage batches what waits (poll's max_records). See KafkaBusConfig.
                fetch_min_bytes=config.fetch_min_bytes,
                fetch_max_wait_ms=config.fetch_max_wait_ms)
            # Load the topics' metadata before joining: a group leader that joins without it
            # assigns nobody those partitions and does not always notice when it arrives.
            for topic in self._logical:
                self._consumer.partitions_for_topic(topic)
            self._consumer.subscribe(list(self._logical), listener=_OwnershipListener(self))

    def assigned(self) -> list[tuple[str, int]]:
        """(bus topic, partition) pairs this member owns now; [] before it joined."""
        with self._lock:
            return sorted((self._logical[tp.topic], tp.partition) for tp in self._owned)

    def own(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._owned |= partitions

    def forget(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._owned -= partitions
            for tp in partitions:
                self._first_polled.pop(tp, None)

    def poll(self, max_records: int, timeout_secs: float,
             max_bytes: int | None = None) -> list[Record]:
        with unavailable(self._config, f"polling for group {self._group_id}"):
            batches = self._consumer.poll(timeout_ms=int(timeout_secs * 1000),
                                          max_records=max_records)
        if max_bytes is not None:
            batches = self._within(batches, max_bytes)
        records: list[Record] = []
        with self._lock:
            for tp, messages in batches.items():
                if tp not in self._owned or not messages:
                    continue                     # revoked meanwhile: its new owner reads them
                self._first_polled.setdefault(tp, messages[0].offset)
                topic = self._logical[tp.topic]
                records.extend(Record(topic, m.key or b"", m.value or b"", m.offset,
                                      m.offset + 1, tp.partition) for m in messages)
        return records

    def _within(self, batches: dict[TopicPartition, list[Any]], max_bytes: int
                ) -> dict[TopicPartition, list[Any]]:
        """The polled messages up to max_bytes of values (at least one); each partition cut
        short is sought back to its first message left, which the next poll delivers."""
        kept: dict[TopicPartition, list[Any]] = {}
        taken_bytes = 0
        for tp, messages in batches.items():
            taken = 0
            while taken < len(messages) and taken_bytes < max_bytes:
                taken_bytes += len(messages[taken].value or b"")
                taken += 1
            if taken:
                kept[tp] = messages[:taken]
            if taken < len(messages):
                self._consumer.seek(tp, messages[taken].offset)
        return kept

    def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        with self._lock:
            for record in records:
                tp = TopicPartition(self._config.topic_name(record.topic), record.partition)
                first = self._first_polled.get(tp)
                if first is not None and record.offset >= first:
                    offsets[tp] = max(offsets.get(tp, 0), record.next_offset)
        if not offsets:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1)
                                   for tp, offset in offsets.items()})
        except LOST_TO_REBALANCE:
            raise Retryable(f"group {self._group_id} rebalanced before the commit; "
                            "the records will be delivered again") from None
        except kafka_errors.KafkaError as exc:
            raise Unavailable(f"Kafka at {self._config.bootstrap_servers}: committing for "
                              f"group {self._group_id} failed: {_describe(exc)}") from None

    def rewind(self) -> None:
        with self._lock:
            self._first_polled.clear()
        with unavailable(self._config, f"rewinding group {self._group_id}"):
            seek_to_committed(self._consumer)

    def lag(self) -> int:
        return self._bus.group_lag(self._group_id, list(self._logical))

    def close(self) -> None:
        # No autocommit: only `commit` decides what is done; leaving the group lets the
        # others take our partitions at once instead of after session_timeout_secs.
        self._consumer.close(autocommit=False)


def read_to_end(config: KafkaBusConfig, topic: str, reader: str,
                timeout_secs: float) -> Iterator[bytes]:
    """KafkaBusConfig.read_topic: `topic` from its start in a group of this read's own (a
    shared group would split the partitions between readers). A poll may be empty while the
    group is joining or a fetch is slow, so the group commits what was read, and the end is
    reached when its lag is 0: the end offsets, not a guess from empty polls."""
    bus = KafkaBus(config)
    try:
        consumer = bus.consumer(f"{reader}.{os.getpid()}.{uuid.uuid4().hex[:8]}", [topic])
        deadline = time.monotonic() + timeout_secs
        read = 0
        while time.monotonic() < deadline:
            records = consumer.poll(5000, timeout_secs=1.0)
            if records:
                for record in records:
                    yield record.value
                read += len(records)
                consumer.commit(records)
                continue
            if consumer.lag() == 0:
                return
        log.warning("Stopped reading a topic at the timeout.",
                    extra={"topic": topic, "read": read, "timeout_secs": timeout_secs})
    finally:
        bus.close()
