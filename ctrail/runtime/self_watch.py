"""The pipeline watching itself: CT-OPS-001..004 (detectors.ops_rules), raised by a thread of each
process that runs stages and published on ctrail.alerts, so they are routed like any alert.

Every `interval_secs` the watch looks at what this process knows:
- CT-OPS-001 (detectors.silence): the sources the process chain heard from (Chain calls
  heard() once per source per batch), on arrival time and event time;
- CT-OPS-002: each source's parsed and dead-lettered counts (Telemetry, `collect.<source>`) over
  the last `window_secs`; above `threshold` of at least `min_records` records it fires;
- CT-OPS-003: problems reported to PROBLEMS (the scheduler's evidence sealing and the
  verification of what it sealed, ctrail.runtime.scheduler);
- CT-OPS-004: each notification receiver's circuit breaker (the notify stage's
  `notify_circuit_open` sample), open for longer than `circuit_open_secs`.

What it watches is per process: in distributed mode each worker watches its own stages (the
notify worker its receivers, the evidence worker its archive, the process worker the sources
whose records it parses). A source's records are keyed by stream, so with several process
workers one file's lines reach one of them, and a rebalance moves them: the worker that lost
them would call the file silent, and never hear it come back. So silence is judged only while
this process is the one reader of ctrail.raw (embedded mode, or a single process worker);
otherwise it is suspended, said once in the log, and resumed when the group is one again. The state (silences, open conditions) is checkpointed in the data
dir, so a restart neither forgets a silent source nor raises an open condition twice. /readyz
and /metrics read the same silence status (Telemetry.set_silent, ctrail.runtime.ops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.bus import ALERTS
from ctrail.bus.codec import decode, encode
from ctrail.event import Alert
from ctrail.runtime.telemetry import Telemetry
from detectors.ops_rules import CIRCUIT_OPEN, DEAD_LETTER_RATE, EVIDENCE_FAILED, ops_alert
from detectors.silence import SilenceConfig, SilenceWatch
from detectors.window_state import Checkpoint

log = logging.getLogger(__name__)
# The chain's counters per source: "collect.<source>" (ctrail.runtime.collect.STAGE, which
# cannot be imported here: ctrail.settings imports this module and collect imports settings).
PARSE_PREFIX: Final = "collect."
PROCESS_STAGE: Final = "process"


class DeadLetterRateConfig(BaseModel):
    """CT-OPS-002's threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float = Field(0.05, gt=0, le=1, description="Share of a source's records "
                             "dead-lettered within the window above which CT-OPS-002 fires.")
    min_records: PositiveInt = Field(20, description="Fewest records in the window for the "
                                     "rate to count (two bad records of three is no trend).")
    window_secs: PositiveFloat = 300


class WatchConfig(BaseModel):
    """The pipeline's own rules, CT-OPS-001..004."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    interval_secs: PositiveFloat = Field(15, description="How often the conditions are checked.")
    silence: SilenceConfig = SilenceConfig()
    dead_letters: DeadLetterRateConfig = DeadLetterRateConfig()
    circuit_open_secs: PositiveFloat = Field(
        600, description="How long a notification receiver's circuit may stay open before "
        "CT-OPS-004 fires.")


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str               # "seal" | "verify"
    subject: str            # what failed (the archive, a segment)
    detail: str
    at: float


class Problems:
    """Failures other parts of the process report for CT-OPS-003 (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Problem] = []

    def report(self, kind: str, subject: str, detail: str, at: float | None = None) -> None:
        with self._lock:
            self._items.append(Problem(kind, subject, detail, time.time() if at is None else at))

    def take(self) -> list[Problem]:
        with self._lock:
            items, self._items = self._items, []
        return items


PROBLEMS: Final = Problems()        # one per process: the scheduler and the stages share it


class SelfWatch:
    def __init__(self, config: WatchConfig, telemetry: Telemetry, checkpoint: Checkpoint,
                 publish: Callable[[list[Alert]], None], problems: Problems = PROBLEMS,
                 clock: Callable[[], float] = time.time,
                 sources: set[str] | None = None,
                 sole_reader: Callable[[], bool] = lambda: True) -> None:
        """`sources`: the configured source names (others in the checkpoint are forgotten);
        `sole_reader`: whether this process alone reads ctrail.raw now (see the module)."""
        self.sole_reader = sole_reader
        self._suspended = False
        self.config = config
        self.telemetry = telemetry
        self.checkpoint = checkpoint
        self.publish = publish
        self.problems = problems
        self.clock = clock
        self._lock = threading.Lock()
        self.silence = SilenceWatch(config.silence)
        # (time, {source: (parsed, dead-lettered)}) over the last window (CT-OPS-002); the
        # process's counters start at zero with it, so the first check sees all it counted
        self.counts: deque[tuple[float, dict[str, tuple[int, int]]]] = deque([(clock(), {})])
        state = checkpoint.load()
        self.silence.restore(state.get("silence") or {})
        if sources is not None:
            self.silence.keep_only(sources)
        # source -> when its dead-letter rate went above the threshold (CT-OPS-002)
        self.breached: dict[str, float] = dict(state.get("dead_letters") or {})
        # receiver -> when its circuit was first seen open, and those alerted on (CT-OPS-004)
        self.open_since: dict[str, float] = dict(state.get("circuits") or {})
        self.circuit_alerted: set[str] = set(state.get("circuits_alerted") or ())
        # Alerts of the last check that may not have been published: published (again) first.
        self.pending: list[Alert] = [decode_alert(doc) for doc in state.get("outbox") or ()]
        self._outbox_saved = bool(self.pending)
        telemetry.set_silent(self.silence.status())

    def heard(self, source: str, arrival: datetime, event_time: datetime | None) -> None:
        """A batch had records of `source`: the newest received at `arrival`, the newest
        event time among them `event_time` (None when none parsed)."""
        with self._lock:
            self.silence.heard(source, arrival, event_time)

    def check(self) -> list[Alert]:
        """Every condition once; the alerts due are returned (and published by run())."""
        now = self.clock()
        judged = bool(self.silence.sources) and self._may_judge_silence()
        with self._lock:
            # The process stage's lag (records taken in, not yet parsed): while there is a
            # backlog, arrival times seen so far say nothing about silence.
            current = self.telemetry.lags().get(PROCESS_STAGE, 0) == 0
            alerts = self.silence.check(datetime.fromtimestamp(now, timezone.utc),
                                        current) if judged else []
            self.telemetry.set_silent(self.silence.status())
            silence_state = self.silence.snapshot()
        alerts = [*self.pending, *alerts, *self._dead_letters(now), *self._evidence(),
                  *self._circuits(now)]
        self.pending = alerts             # until published
        # Saved when something changed, and once more after an outbox was published (emptied).
        if alerts or self.silence.dirty or self._outbox_saved:
            self._outbox_saved = bool(alerts)
            self.checkpoint.save({"silence": silence_state, "dead_letters": self.breached,
                                  "circuits": self.open_since,
                                  "circuits_alerted": sorted(self.circuit_alerted),
                                  "outbox": [orjson.loads(encode(a)) for a in alerts]})
            self.silence.dirty = False
        return alerts

    def _may_judge_silence(self) -> bool:
        try:
            sole = self.sole_reader()
        except Exception as exc:        # the bus cannot say now: judge next time
            log.warning("Cannot tell whether this process alone reads ctrail.raw.",
                        extra={"error": str(exc)})
            return False
        if sole == self._suspended:     # a change: say it once
            self._suspended = not sole
            log.log(logging.WARNING if self._suspended else logging.INFO,
                    "Source silence (CT-OPS-001) is suspended: several process workers share "
                    "ctrail.raw." if self._suspended else "Source silence (CT-OPS-001) is "
                    "watched again: this process alone reads ctrail.raw.")
        return sole

    def _dead_letters(self, now: float) -> list[Alert]:
        limits = self.config.dead_letters
        current = {name[len(PARSE_PREFIX):]: (c["sent"], c["dead_lettered"])
                   for name, c in self.telemetry.snapshot().items()
                   if name.startswith(PARSE_PREFIX)}
        self.counts.append((now, current))
        while len(self.counts) > 1 and self.counts[1][0] <= now - limits.window_secs:
            self.counts.popleft()
        _then, before = self.counts[0]
        out: list[Alert] = []
        for source, (parsed, dead) in sorted(current.items()):
            was_parsed, was_dead = before.get(source, (0, 0))
            good, bad = parsed - was_parsed, dead - was_dead
            total = good + bad
            rate = bad / total if total else 0.0
            high = total >= limits.min_records and rate > limits.threshold
            if high and source not in self.breached:
                self.breached[source] = now
                out.append(ops_alert(DEAD_LETTER_RATE, source, now, now,
                                     f"{bad} of {total} records of source {source} were "
                                     f"dead-lettered in the last {limits.window_secs:.0f} s "
                                     f"({rate:.0%}, threshold {limits.threshold:.0%}).",
                                     tags=(f"ctrail.source={source}",)))
            elif not high and source in self.breached and total >= limits.min_records:
                since = self.breached.pop(source)
                out.append(ops_alert(DEAD_LETTER_RATE, source, since, now,
                                     f"The dead-letter rate of source {source} is back to "
                                     f"{rate:.0%}.", begins=False,
                                     tags=(f"ctrail.source={source}",)))
        return out

    def _evidence(self) -> list[Alert]:
        return [ops_alert(EVIDENCE_FAILED, f"{p.kind}|{p.subject}", p.at, p.at,
                          f"Evidence {'sealing' if p.kind == 'seal' else 'verification'} "
                          f"failed for {p.subject}: {p.detail}")
                for p in self.problems.take()]

    def _circuits(self, now: float) -> list[Alert]:
        limit = self.config.circuit_open_secs
        state = {s.labels.get("receiver", "?"): s.value > 0
                 for s in self.telemetry.samples() if s.name == "notify_circuit_open"}
        out: list[Alert] = []
        for receiver, is_open in sorted(state.items()):
            if is_open:
                since = self.open_since.setdefault(receiver, now)
                if now - since > limit and receiver not in self.circuit_alerted:
                    self.circuit_alerted.add(receiver)
                    out.append(ops_alert(CIRCUIT_OPEN, receiver, since, since + limit,
                                         f"The circuit of receiver {receiver} has been open "
                                         f"for {now - since:.0f} s (limit {limit:.0f} s); its "
                                         "alerts wait in the outbox.",
                                         tags=(f"ctrail.receiver={receiver}",)))
            elif receiver in self.open_since:
                since = self.open_since.pop(receiver)
                if receiver in self.circuit_alerted:
                    self.circuit_alerted.discard(receiver)
                    out.append(ops_alert(CIRCUIT_OPEN, receiver, since, now,
                                         f"The circuit of receiver {receiver} is closed again.",
                                         begins=False, tags=(f"ctrail.receiver={receiver}",)))
        return out

    def run(self, stop: threading.Event) -> None:
        """check() every interval until `stop`; a failure is logged, never ends the watch."""
        while not stop.wait(self.config.interval_secs):
            try:
                alerts = self.check()
                if alerts:
                    self.publish(alerts)
                    self.pending = []
            except Exception:
                log.exception("The pipeline's self-watch failed; it will try again.")


def decode_alert(doc: Any) -> Alert:
    alert = decode(ALERTS, orjson.dumps(doc))
    assert isinstance(alert, Alert)         # what decode() gives for ctrail.alerts
    return alert


def checkpoint_path(data_dir: Path, stages: Any) -> Path:
    """One state file per set of stages a process runs (workers may share a data dir)."""
    return data_dir / "detection" / f"self-watch-{'-'.join(sorted(stages))}.json"
