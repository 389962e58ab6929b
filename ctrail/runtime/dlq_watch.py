"""What the stages dead-letter while a replay runs, read from ctrail.dlq by a group of its own.

Opened before anything is replayed, the watch first reads the topic to its end and commits, so
everything it reads afterwards was published after that point: the verdicts of the stages on
the replayed items (and whatever else was rejected meanwhile, which the caller tells apart).
Kafka Connect's and Vector's dead-letter reprocessing also read the topic with a consumer group.

One group serves every replay of a deployment, so the topic's history is read once, not per
replay. Replays therefore run one at a time: a second member of the group would take part of
the topic's partitions and the first would miss what lands there. On Kafka a replay that finds
the group with members refuses to start; on the local bus the data directory's lock already
lets one process in. The group's offset, like every group's, holds back the deletion of the
local log's DLQ segments written since the last replay.
"""

from __future__ import annotations

import time
from typing import Final, Sequence

from ctrail.bus import DLQ, Bus, Record
from ctrail.bus.codec import decode
from ctrail.errors import InvalidInput, Unavailable, UsageError
from ctrail.event import Rejection

GROUP: Final = "dlq-replay"


class DlqWatch:
    def __init__(self, bus: Bus, timeout_secs: float) -> None:
        self.timeout_secs = timeout_secs
        if bus.group_members(GROUP):          # always 0 on a single-process bus
            raise UsageError("another `ctrail dlq replay` is running (its consumer group "
                             f"{bus.group_name(GROUP)} has members); wait for it to end")
        self.consumer = bus.consumer(GROUP, (DLQ,))
        try:
            self.read_to_end()
        except BaseException:
            self.consumer.close()
            raise

    def read_to_end(self) -> list[Rejection]:
        """The dead letters published since the last call, committed as read. Raises
        Unavailable when the end is not reached within timeout_secs."""
        found: list[Rejection] = []
        deadline = time.monotonic() + self.timeout_secs
        while True:
            # On Kafka a poll also joins the group and keeps it joined: poll without pauses.
            records = self.consumer.poll(1000, timeout_secs=1.0)
            if records:
                found.extend(_rejections(records))
                self.consumer.commit(records)
            elif self.consumer.lag() == 0:
                return found
            if time.monotonic() > deadline:
                raise Unavailable(f"could not read {DLQ} to its end within "
                                  f"{self.timeout_secs:.0f} s")

    def close(self) -> None:
        self.consumer.close()


def _rejections(records: Sequence[Record]) -> list[Rejection]:
    found = []
    for record in records:
        try:
            item = decode(DLQ, record.value)
        except InvalidInput:          # not a dead letter of ours: no stage's verdict either
            continue
        assert isinstance(item, Rejection)
        found.append(item)
    return found
