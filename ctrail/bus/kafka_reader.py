"""A topic that is not ours, read as one consumer group: for sources on an external Kafka
endpoint (Azure Event Hubs' Kafka interface, where AKS streams its audit logs).

It reuses the Kafka bus's client options (TLS, SASL) and error translation, and so kafka-python
through ctrail.bus.kafka: nothing outside ctrail/bus imports it, and a source imports this
module only when it is built. Offsets are committed only by `commit` (auto-commit is off), the
next offset per partition; `rewind` goes back to the committed offsets, so records polled but
not committed come again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctrail.bus.kafka import (
    KafkaConsumer,
    OffsetAndMetadata,
    TopicPartition,
    client_options,
    probe,
    seek_to_committed,
    unavailable,
)
from ctrail.bus.kafka_config import KafkaBusConfig


@dataclass(frozen=True, slots=True)
class TopicRecord:
    partition: int
    offset: int
    value: bytes


class KafkaTopicReader:
    def __init__(self, config: KafkaBusConfig, topic: str, group_id: str) -> None:
        self._config, self._topic = config, topic
        probe(config)
        with unavailable(config, f"joining consumer group {group_id} on {topic}"):
            self._consumer = KafkaConsumer(topic, **client_options(config), group_id=group_id,
                                           enable_auto_commit=False,
                                           auto_offset_reset="earliest")

    def poll(self, max_records: int, timeout_secs: float) -> list[TopicRecord]:
        with unavailable(self._config, f"polling {self._topic}"):
            batches = self._consumer.poll(timeout_ms=int(timeout_secs * 1000),
                                          max_records=max_records)
        return [TopicRecord(tp.partition, message.offset, message.value or b"")
                for tp, messages in batches.items() for message in messages]

    def commit(self, next_offsets: dict[int, int]) -> None:
        """Commit, per partition, the offset of the next record to read."""
        if not next_offsets:
            return
        with unavailable(self._config, f"committing offsets of {self._topic}"):
            self._consumer.commit({TopicPartition(self._topic, partition):
                                   OffsetAndMetadata(offset, "", -1)
                                   for partition, offset in next_offsets.items()})

    def rewind(self) -> None:
        """Back to the committed offsets of the partitions this member holds."""
        with unavailable(self._config, f"rewinding {self._topic}"):
            seek_to_committed(self._consumer)

    def close(self) -> None:
        self._consumer.close()
