"""`ctrail run`: the long-running pipeline — configured listeners and tailers, and every stage."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Sequence

from ctrail.cli.common import add_common, settings_of
from ctrail.runtime.collect import Collector
from ctrail.runtime.health import Heartbeat, all_alive
from ctrail.runtime.pipeline import STAGE_NAMES, Pipeline
from ctrail.settings import Settings
from ctrail.audit.spool import SpoolPickup

if TYPE_CHECKING:
    from ctrail.runtime.scheduler import Scheduler

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run the pipeline until stopped (SIGINT, SIGTERM)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return serve(settings_of(args), "run", STAGE_NAMES, with_sources=True)


def serve(settings: Settings, role: str, stages: Sequence[str], with_sources: bool) -> int:
    """Run `stages` (and the configured sources, if asked) until SIGINT or SIGTERM, with a
    heartbeat for `ctrail health` under the name `role`."""
    stop = threading.Event()
    # Before the stages are built (rebuilding the entity graph can take a while): a SIGTERM
    # during startup then ends in a clean stop, as one later does, not in death by signal.
    _on_signals(stop)
    pipeline = Pipeline(settings, stages)
    collectors: list[Collector] = []
    scheduler: Scheduler | None = None
    pickup: SpoolPickup | None = None
    try:
        for name, config in (settings.sources.items() if with_sources else ()):
            source = config.build(name, settings.data_dir, settings.pipeline.max_record_bytes)
            collectors.append(pipeline.collector(name, source, config.parser_name))
        pipeline.start()
        # `ctrail run` publishes the audit records other commands spooled (ctrail.audit.
        # spool); a `ctrail worker` does not, so workers sharing a host never race for it.
        if role == "run":
            pickup = SpoolPickup(settings.data_dir, pipeline.bus.producer())
            pickup.start()
        scheduler = _start_scheduler(settings) if role == "run" else None
        threads = [threading.Thread(target=_collect, args=(c, stop), name=f"collect-{c.name}",
                                    daemon=True) for c in collectors]
        for thread in threads:
            thread.start()
        def alive() -> bool:
            return all_alive([*threads, *pipeline.threads])
        heartbeat = Heartbeat(settings.data_dir, role, alive=alive,
                              status=lambda: {"stages": pipeline.telemetry.snapshot()})
        heartbeat.start()
        ops = settings.ops.build(pipeline.telemetry, alive) if settings.ops else None
        log.info("ContainerTrail is running.", extra={
            "stages": list(stages), "sources": [c.name for c in collectors],
            "bus": settings.bus.type, "store": settings.store.type})
        stop.wait()
        heartbeat.stop()
        if ops is not None:
            ops.close()
        for thread in threads:
            thread.join()
    finally:
        if scheduler is not None:
            scheduler.stop()
        if pickup is not None:
            pickup.stop()           # after the scheduler, which may still spool a record
        for collector in collectors:
            collector.source.close()
        pipeline.close()
    return 0


def _start_scheduler(settings: Settings) -> Scheduler | None:
    """Reports on their schedules, evidence sealing and expiry: only `ctrail run` schedules
    (a distributed `ctrail worker` does not, or each worker would run every report)."""
    if not settings.reports and settings.evidence is None:
        return None
    from ctrail.runtime.scheduler import Scheduler

    scheduler = Scheduler(settings)
    scheduler.start()
    return scheduler


def _collect(collector: Collector, stop: threading.Event) -> None:
    """Collect until stopped; sources block briefly in read() when idle."""
    while not stop.is_set():
        try:
            collector.run_once()
        except Exception:
            # The input stays uncommitted, so nothing is lost; try again shortly.
            log.exception("Collecting failed; retrying.", extra={"source": collector.name})
            stop.wait(1.0)


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("Stopping.", extra={"signal": signal.Signals(signum).name})
        stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
