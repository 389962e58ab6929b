"""`ctrail run`: the long-running pipeline — configured listeners and tailers, and every stage."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ctrail.cli.common import add_common, settings_of
from ctrail.runtime.health import Heartbeat, all_alive
from ctrail.runtime.intake import IntakeProcess, serve_sources
from ctrail.runtime.pipeline import STAGE_NAMES, Pipeline
from ctrail.runtime.signals import stop_on
from ctrail.settings import Settings

if TYPE_CHECKING:
    from ctrail.console.app import ConsoleServer
    from ctrail.runtime.ops import OpsServer
    from ctrail.runtime.scheduler import Scheduler

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run the pipeline until stopped (SIGINT, SIGTERM)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return serve(settings_of(args), "run", STAGE_NAMES, with_sources=True,
                 config_path=args.config)


def serve(settings: Settings, role: str, stages: Sequence[str], with_sources: bool,
          config_path: Path | None = None) -> int:
    """Run `stages` (and the configured sources, if asked) until SIGINT or SIGTERM, with a
    heartbeat for `ctrail health` under the name `role`.

    Sources beside stages run in an intake process of their own (ctrail.runtime.intake), so
    intake and the processing chain each have a core; sources alone (`ctrail worker collect`)
    run in this process."""
    stop = threading.Event()
    # Before the stages are built (rebuilding the entity graph can take a while): a SIGTERM
    # during startup then ends in a clean stop, as one later does, not in death by signal.
    _on_signals(stop)
    intake_apart = with_sources and bool(settings.sources) and bool(stages)
    pipeline = Pipeline(settings, stages, intake_elsewhere=intake_apart)
    intake: IntakeProcess | None = None
    sources: threading.Thread | None = None
    scheduler: Scheduler | None = None
    console: ConsoleServer | None = None
    ops: OpsServer | None = None

    def alive() -> bool:
        return (all_alive([*pipeline.threads, *([sources] if sources else [])])
                and (intake is None or intake.alive()))
    try:
        pipeline.start()
        # /metrics and the probes answer from here on, also while the intake process waits for
        # the previous run's to let go of the data directory (a run killed a moment ago).
        ops = settings.ops.build(pipeline.telemetry, alive) if settings.ops else None
        if intake_apart:
            intake = IntakeProcess(settings, pipeline.telemetry)
            intake.start()
        elif with_sources:
            # `ctrail run` publishes the audit records other commands spooled, from the process
            # that writes ctrail.raw; a `ctrail worker collect` does not, so workers sharing a
            # host never race for the spool.
            sources = threading.Thread(
                target=serve_sources, name="sources", daemon=True,
                args=(settings, pipeline.bus, stop, role == "run"),
                kwargs={"failing": lambda name, failed: pipeline.telemetry.set_failing(
                            f"intake {name}", failed),
                        "spooled": lambda spool: pipeline.telemetry.add_source(spool.samples)})
            sources.start()
        scheduler = _start_scheduler(settings, role)
        console = _start_console(settings, config_path) if role == "run" else None
        heartbeat = Heartbeat(settings.data_dir, role, alive=alive,
                              status=lambda: {"stages": pipeline.telemetry.snapshot()})
        heartbeat.start()
        log.info("ContainerTrail is running.", extra={
            "role": role, "pid": os.getpid(), "stages": list(stages), "sources": list(settings.sources) if with_sources else [],
            "intake_process": intake_apart, "bus": settings.bus.type,
            "store": settings.store.type})
        stop.wait()
        heartbeat.stop()
    finally:
        stop.set()
        if ops is not None:
            ops.close()
        if intake is not None:
            intake.stop()               # first: no sender is answered after this
        if sources is not None:
            sources.join()
        if scheduler is not None:
            scheduler.stop()
        if console is not None:
            console.stop()
        pipeline.close()
    return 0


def _start_scheduler(settings: Settings, role: str) -> Scheduler | None:
    """Reports on their schedules, evidence sealing and expiry: `ctrail run` schedules them
    all. Distributed, the one `ctrail worker scheduler` runs the reports (were every worker to
    schedule, each would run every report), and the evidence worker seals and expires its own
    archive (one process holds an archive: its lock)."""
    if role == "scheduler":
        settings = settings.model_copy(update={"evidence": None})
    elif role == "evidence":
        settings = settings.model_copy(update={"reports": {}})
    elif role != "run":
        return None
    if not settings.reports and settings.evidence is None:
        return None
    from ctrail.runtime.scheduler import Scheduler

    scheduler = Scheduler(settings)
    scheduler.start()
    return scheduler


def _start_console(settings: Settings, config_path: Path | None) -> ConsoleServer | None:
    """The web console beside the pipeline, when the config has a `console:` section."""
    if settings.console is None:
        return None
    from ctrail.console.app import ConsoleServer

    console = ConsoleServer(settings, settings.console, config_path)
    console.start()
    return console


def _on_signals(stop: threading.Event) -> None:
    stop_on((signal.SIGINT, signal.SIGTERM), stop,
            lambda signum: log.info("Stopping.", extra={"signal": signum.name}))
