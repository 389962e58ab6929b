"""LocalBusConfig: the `bus: {type: local}` section of the configuration (embedded mode).

Beside KafkaBusConfig (ctrail.bus.kafka_config), so that the settings name no bus
implementation: the local log itself (ctrail.bus.local) is imported when a bus is built or read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

if TYPE_CHECKING:
    from ctrail.bus import Bus
    from ctrail.bus.intake_spool import IntakeSpool
    from ctrail.bus.local import LocalBus


class LocalBusConfig(BaseModel):
    """The durable local log in the data directory (embedded mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["local"] = "local"
    single_process: ClassVar[bool] = True       # as LocalBus
    segment_bytes: PositiveInt = Field(256 * 1024 * 1024,
                                       description="Roll a topic's segment file at this size.")
    intake_min_free_bytes: NonNegativeInt = Field(
        64 * 1024 * 1024,
        description="Intake stops taking records (webhooks answer 503, tailers wait) while the "
                    "data directory's filesystem has less free space than this, so processing "
                    "can still store what was taken. 0: only a full disk stops it.")

    def build(self, data_dir: Path, guest: bool = False) -> "LocalBus":
        from ctrail.bus.local import LocalBus

        return LocalBus(data_dir / "bus", self.segment_bytes, guest, self.intake_min_free_bytes)

    def open_intake_spool(self, data_dir: Path, bus: "Bus") -> "IntakeSpool | None":
        """None: intake appends to the local log itself, which is durable on disk already."""
        return None

    def read_topic(self, data_dir: Path, topic: str, reader: str,
                   timeout_secs: float) -> Iterator[bytes]:
        """See ctrail.bus.BusConfig.read_topic (`reader` and `timeout_secs` are unused: the
        files are read to their end at once, in no group)."""
        from ctrail.bus.local import read_topic_files

        return read_topic_files(data_dir / "bus" / topic)
