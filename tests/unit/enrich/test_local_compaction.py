"""The local entity log stays the size of the live graph: containers come and go for months
(each learned, then expired after the retention), and the segments on disk hold a snapshot of
the live entities plus what changed since, not every fact ever learned; a restart and
a read-only rebuild (`ctrail timeline`) both still find every live entity."""

from __future__ import annotations

from pathlib import Path

from ctrail.bus import ENTITIES
from ctrail.bus.local import LocalBus, read_topic_files
from enrich import EnrichConfig
from enrich.graph import DAY_SECS, EntityGraph, Fact
from enrich.persistence import LocalCompaction, rebuild
from tests.unit.enrich.test_graph import T0, Clock

PER_DAY = 400                    # containers started a day, each gone the same day
DAYS = 180
SEGMENT_BYTES = 64 * 1024


def container_facts(day: int) -> list[Fact]:
    seen = T0 + day * DAY_SECS
    facts = []
    for n in range(PER_DAY):
        cid = f"{day:04d}{n:08d}".ljust(64, "c")
        facts.append(Fact("container", cid, seen, {"id": cid, "pod": f"ns/pod-{day}-{n}",
                                                   "name": "app"}))
        facts.append(Fact("container", cid, seen + 60, {"gone": seen + 60}))
    return facts


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / ENTITIES).glob("*.log"))


def test_the_local_entity_log_is_compacted_to_the_live_graph(tmp_path: Path) -> None:
    clock = Clock(T0)
    bus = LocalBus(tmp_path / "bus", segment_bytes=SEGMENT_BYTES)
    enricher = EnrichConfig(retention_days=30).build(bus, clock=clock)
    assert isinstance(enricher.compaction, LocalCompaction)
    sizes = []
    for day in range(DAYS):
        clock.now = T0 + day * DAY_SECS
        enricher.begin_batch()
        for fact in container_facts(day):
            enricher.graph.apply(fact)
        enricher.graph.expire()             # retention runs in event time: after today's facts
        enricher.end_batch()
        sizes.append(disk_bytes(tmp_path / "bus"))
    live = {key for key in enricher.graph.tables["container"]}
    enricher.close()
    bus.close()

    assert len(live) == 31 * PER_DAY                    # 30 days of retention, and today
    # Without compaction the log holds every container ever seen (180 days' worth). With it:
    # the previous snapshot of the live graph, at most as many records again, and the new
    # snapshot, until the segments before it are deleted at the next roll (a batch more, as
    # the check runs after each batch; records vary by a few bytes, hence 2%).
    per_record = sizes[0] / PER_DAY * 1.02
    since = max(LocalCompaction.MIN_RECORDS, len(live)) + PER_DAY
    bound = (2 * len(live) + since) * per_record
    assert max(sizes) < bound + 2 * SEGMENT_BYTES
    assert sizes[-1] < (len(live) + since) * per_record
    assert DAYS * PER_DAY * per_record > 1.8 * bound      # what the log would otherwise hold

    restarted_bus = LocalBus(tmp_path / "bus", segment_bytes=SEGMENT_BYTES)
    restarted = EnrichConfig(retention_days=30).build(restarted_bus, clock=clock)
    assert set(restarted.graph.tables["container"]) == live
    restarted.close()
    restarted_bus.close()
    read_only = EntityGraph(30, clock)
    rebuild(read_only, read_topic_files(tmp_path / "bus" / ENTITIES))
    read_only.expire()
    assert set(read_only.tables["container"]) == live
