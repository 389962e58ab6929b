"""`ctrail run`'s intake: the configured sources in a process of their own.

Listeners and tailers append what they read to ctrail.raw and answer their senders; the
processing chain reads it in the parent process. Apart, each has its own interpreter lock and
core, so a burst of webhook batches is absorbed by the raw log while the chain works, instead of
both sharing one core (as Vector's sources and sinks run as separate tasks, and kube-apiserver's
webhook backend only needs a quick answer).

On the local log the parent holds the data directory's lock and reads ctrail.raw as this
process appends it (`Bus.written_elsewhere`); this process opens the bus as the parent's guest
and writes ctrail.raw only: records, the dead letters of records it judged (they travel on
ctrail.raw), and the audit records other commands spooled (it publishes the spool). On Kafka the
same split needs nothing special.

The process ends when its parent asks (SIGTERM) or dies (it watches its parent's pid: a kill -9
of `ctrail run` must not leave a listener acknowledging what nobody will process).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Final

from ctrail.audit.spool import SpoolPickup
from ctrail.bus import Bus
from ctrail.durable import lock_directory
from ctrail.errors import ConfigError, CtrailError, Retryable, Unavailable
from ctrail.logformat import configure_logging, current_format
from ctrail.runtime.collect import Collector, collector_for
from ctrail.runtime.signals import stop_on
from ctrail.runtime.telemetry import Sample, Telemetry
from ctrail.settings import Settings

if TYPE_CHECKING:       # a bus implementation's module: its objects only come in (the seam)
    from ctrail.bus.intake_spool import IntakeSpool, SpoolBacklog

log = logging.getLogger(__name__)
STOP_WAIT_SECS: Final = 30.0
PREVIOUS_INTAKE_WAIT_SECS: Final = 30.0
ORPHAN_GRACE_SECS: Final = 5.0
PR_SET_PDEATHSIG: Final = 1
RESTART_BACKOFF_SECS: Final = (1.0, 30.0)
BACKLOG_REPORT_SECS: Final = 1.0        # how often the intake process tells its spool's backlog
Failing = Callable[[str, bool], None]


def serve_sources(settings: Settings, bus: Bus, stop: threading.Event, publish_spool: bool,
                  ready: Callable[[], None] = lambda: None,
                  failing: Failing = lambda _name, _failing: None,
                  spooled: Callable[[IntakeSpool], None] = lambda _spool: None) -> None:
    """Run every configured source until `stop`: each in a thread of its own, appending to
    ctrail.raw; with `publish_spool`, also the audit spool's pickup (ctrail.raw's writer
    publishes what other commands spooled). `ready` is called once every source is built
    (listening, files opened); a source that cannot be built raises (ConfigError...).
    `failing(source, True)` when a source's batches cannot be appended (a full disk), and
    `(source, False)` once they can again (for /readyz). `spooled(spool)` once the intake
    spool is open (Kafka with bus.intake_spool), for its backlog in /metrics."""
    telemetry = Telemetry()
    collectors: list[Collector] = []
    pickup: SpoolPickup | None = None
    # Kafka with bus.intake_spool: sources append to a spool in the data directory, which a
    # thread of its own ships to Kafka.
    spool = settings.bus.open_intake_spool(settings.data_dir, bus)
    writer = bus if spool is None else spool
    try:
        if spool is not None:
            spool.start()
        for name, config in settings.sources.items():
            source = config.build(name, settings.data_dir, settings.pipeline.max_record_bytes)
            collectors.append(collector_for(settings, name, source, config.parser_name,
                                            writer.producer(), telemetry))
        if publish_spool:
            pickup = SpoolPickup(settings.data_dir, writer.producer())
            pickup.start()
        threads = [threading.Thread(target=collect_until, args=(c, stop, failing), daemon=True,
                                    name=f"collect-{c.name}") for c in collectors]
        for thread in threads:
            thread.start()
        log.info("Intake is running.", extra={"sources": [c.name for c in collectors]})
        ready()
        if spool is not None:
            spooled(spool)          # after ready(): the intake process's first word is "ready"
        stop.wait()
        for thread in threads:
            thread.join()
    finally:
        if pickup is not None:
            pickup.stop()           # after the sources: a pickup at stop publishes the rest
        for collector in collectors:
            collector.source.close()
        if spool is not None:
            spool.close()               # last: it ships what the sources appended


def collect_until(collector: Collector, stop: threading.Event,
                  failing: Failing = lambda _name, _failing: None) -> None:
    """Collect until stopped; sources block briefly in read() when idle."""
    failed = False
    while not stop.is_set():
        try:
            collector.run_once()
            if failed:
                failed = False
                failing(collector.name, False)
                log.info("Intake appends again.", extra={"source": collector.name})
        except Retryable as exc:
            # A full disk, most often: the batch was not acknowledged (webhooks answer 503,
            # tailers read it again); intake takes records again once the bus writes.
            log.warning("Intake cannot append; retrying.", extra={"source": collector.name,
                                                                   "error": str(exc)})
            if not failed:
                failed = True
                failing(collector.name, True)
            stop.wait(1.0)
        except Exception:
            # The input stays uncommitted, so nothing is lost; try again shortly.
            log.exception("Collecting failed; retrying.", extra={"source": collector.name})
            stop.wait(1.0)


def _child_main(settings: Settings, parent: int, verbose: bool, report: Connection,
                log_format: str = "text") -> None:
    """The intake process. It reports "ready", or the one-line error that kept a source from
    starting (the parent stops `ctrail run` with it), on `report`."""
    configure_logging(logging.DEBUG if verbose else logging.INFO, log_format)
    os.umask(0o077)
    stop = threading.Event()
    stop_on((signal.SIGTERM,), stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent stops us, in order
    _terminate_with_parent()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        log.warning("ctrail run is gone; intake stops.")
        # Nothing is acknowledged before it is durable, so a hard exit loses nothing; an
        # orphan that lingers would keep its ports and tail its files for nobody. The exit
        # is armed first: nothing the stop waits for may keep it from happening.
        exit_timer = threading.Timer(ORPHAN_GRACE_SECS, os._exit, (3,))
        exit_timer.daemon = True
        exit_timer.start()
        stop.set()
    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    reports = _Reports(report)

    def report_backlog(spool: IntakeSpool) -> None:
        def send_until_stopped() -> None:
            while not stop.wait(BACKLOG_REPORT_SECS):
                reports.send("spool", spool.backlog())
        threading.Thread(target=send_until_stopped, daemon=True, name="report-backlog").start()
    try:
        held = _hold_intake_lock(settings.data_dir / "intake", parent)
        try:
            bus = settings.bus.build(settings.data_dir, guest=True)
            try:
                serve_sources(settings, bus, stop, publish_spool=True,
                              ready=lambda: reports.send("ready", ""),
                              failing=reports.failing, spooled=report_backlog)
            finally:
                bus.close()
        finally:
            held.close()
    except CtrailError as exc:
        reports.send(type(exc).__name__, str(exc))
        raise SystemExit(2) from None


class _Reports:
    """What the intake process tells its parent, from any of its threads: "ready" or the
    error that kept it from starting, a source failing or recovered (/readyz), the intake
    spool's backlog (/metrics)."""

    def __init__(self, report: Connection) -> None:
        self._report = report
        self._lock = threading.Lock()

    def send(self, kind: str, payload: object) -> None:
        with self._lock:
            try:
                self._report.send((kind, payload))
            except OSError:
                pass                                # the parent is gone: nobody to tell

    def failing(self, name: str, failed: bool) -> None:
        self.send("failing" if failed else "recovered", name)


def _hold_intake_lock(lock_dir: Path, parent: int) -> IO[str]:
    """One intake process per data directory: the one of a `ctrail run` killed a moment ago may
    still be closing its listeners (their ports) and its raw log. It is waited for; one whose
    `ctrail run` is gone (an orphan) is killed rather than waited for."""
    owner = lock_dir / "owner"
    try:
        held = lock_directory(lock_dir, "", 0.0)
    except Unavailable:
        _kill_if_orphaned(owner)
        held = lock_directory(lock_dir, "another intake process still runs for "
                              f"{lock_dir.parent} ({_read_owner(owner)})",
                              PREVIOUS_INTAKE_WAIT_SECS)
    owner.write_text(f"{os.getpid()} {parent}\n")
    return held


def _read_owner(owner: Path) -> str:
    try:
        pid, parent = owner.read_text().split()
    except (OSError, ValueError):
        return "process unknown"
    return f"pid {pid}, started by pid {parent}"


def _kill_if_orphaned(owner: Path) -> None:
    """Kill the intake process recorded in `owner` if it holds the lock and its parent is no
    longer the `ctrail run` that started it (Linux: /proc)."""
    try:
        pid, parent = (int(field) for field in owner.read_text().split())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return
    current_parent = int(stat.rsplit(")", 1)[1].split()[1])     # after "pid (comm) state"
    if current_parent != parent and _holds_open(pid, owner.with_name(".lock")):
        log.warning("The intake process of a ctrail run that is gone still runs; killing it.",
                    extra={"pid": pid})
        os.kill(pid, signal.SIGKILL)


def _holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open: the recorded owner is the lock's holder, not a
    stale record whose pid now belongs to someone else."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path.resolve()) for fd in fds.iterdir())
    except OSError:
        return False


def _terminate_with_parent() -> None:
    """On Linux, have the kernel send SIGTERM the moment the parent dies (prctl
    PR_SET_PDEATHSIG); the pid watch covers other systems and a parent that died before."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class IntakeProcess:
    """The intake child of `ctrail run`, started again (with backoff) if it dies."""

    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        """`telemetry`: where a source that cannot append is marked failing (/readyz), and
        where the intake spool's backlog is reported (/metrics)."""
        self.settings = settings
        self.telemetry = telemetry
        self._failing: set[str] = set()
        self._backlog: SpoolBacklog | None = None       # the latest the process reported
        self._context = multiprocessing.get_context("spawn")   # no forked threads or locks
        self._process: BaseProcess | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, timeout_secs: float = 120.0) -> None:
        """Start the intake process and wait until every source is up; raises the error that
        kept one from starting (ConfigError: a port in use, an unusable token...)."""
        self._spawn()
        self._await_ready(timeout_secs)
        self._watcher = threading.Thread(target=self._supervise, daemon=True,
                                         name="intake-supervisor")
        self._watcher.start()

    def _spawn(self) -> None:
        verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        self._reports, report = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_child_main, args=(self.settings, os.getpid(), verbose, report,
                                      current_format()),
            name="ctrail-intake")
        self._process.start()
        report.close()

    def _await_ready(self, timeout_secs: float) -> None:
        process = self._process
        assert process is not None
        try:
            if not self._reports.poll(timeout_secs):
                raise Unavailable(f"the intake process did not start within {timeout_secs:.0f} s")
            kind, message = self._reports.recv()
        except EOFError:
            process.join(5)
            raise Unavailable(f"the intake process ended at start (exit status "
                              f"{process.exitcode})") from None
        if kind != "ready":
            process.join(STOP_WAIT_SECS)
            raise (ConfigError if kind in ("ConfigError", "UsageError") else Unavailable)(message)

    def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_SECS[0]
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            process.join(timeout=0.5)
            self._read_reports()
            if process.exitcode is None or self._stopping.is_set():
                continue
            self._mark_failing(set())                # the new process starts with a clean slate
            log.error("The intake process ended; starting it again.",
                      extra={"exit_code": process.exitcode, "backoff_secs": backoff})
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_BACKOFF_SECS[1])
            self._spawn()
            try:
                self._await_ready(STOP_WAIT_SECS)
                backoff = RESTART_BACKOFF_SECS[0]
            except CtrailError as exc:
                log.error("The intake process could not start again.", extra={"error": str(exc)})

    def _read_reports(self) -> None:
        failing = set(self._failing)
        try:
            while self._reports.poll():
                kind, payload = self._reports.recv()
                if kind == "spool":
                    self._report_backlog(payload)
                else:
                    (failing.add if kind == "failing" else failing.discard)(f"intake {payload}")
        except (EOFError, OSError):
            pass                                     # the process ended: handled by the caller
        self._mark_failing(failing)

    def _report_backlog(self, backlog: SpoolBacklog) -> None:
        if self._backlog is None and self.telemetry is not None:
            self.telemetry.add_source(self._backlog_samples)
        self._backlog = backlog

    def _backlog_samples(self) -> list[Sample]:
        backlog = self._backlog
        return [] if backlog is None else backlog.samples(time.time())

    def _mark_failing(self, failing: set[str]) -> None:
        if self.telemetry is not None:
            for name in self._failing ^ failing:
                self.telemetry.set_failing(name, name in failing)
        self._failing = failing

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self) -> None:
        """Stop intake first (no sender is answered after this), then return."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        process = self._process
        if process is None or process.exitcode is not None:
            return
        process.terminate()                      # SIGTERM: stop reading, finish the batch
        process.join(STOP_WAIT_SECS)
        if process.exitcode is None:
            log.error("The intake process did not stop in time; killing it.")
            process.kill()
            process.join()
        if process.exitcode not in (0, None):
            log.warning("The intake process ended with an error.",
                        extra={"exit_code": process.exitcode})
