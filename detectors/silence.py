"""CT-OPS-001: a source that was sending stops for longer than its quiet period (PCI DSS 10.7:
an alert when a logging control fails), and a resolve when it comes back.

Measured on two clocks, because each misses what the other sees:
- arrival time: the wall clock against the last record the source delivered (RawEntry.received,
  stamped by the intake). A webhook whose API server died, a tailed file no longer written.
- event time: the newest event time of all sources (the pipeline's event clock) against the
  source's own newest event. A source that still delivers but only old events (a stuck
  forwarder replaying a backlog, a node clock gone wrong), or one that stopped while the others
  went on, in a replay of stored or shipped logs where arrival times say nothing. With a single
  source the event clock is its own and only arrival time can tell.

A source is watched once it has sent something (a configured source that never sent is a
configuration matter, not a silence). One alert per source and clock when the quiet period is
passed (event.type start, outcome failure) and one when the source sends again (event.type end,
outcome success, same group key), routed like any alert. Alert ids come from the rule, the
source, the clock and the last time it was heard, so a redelivery or a restart raises the same
alert again rather than a new one.

The state (per source: last arrival, newest event time, silent or not) is checkpointed by the
self-watch (ctrail.runtime.self_watch), so a restart neither forgets a source that was sending
nor raises its silence twice. Sources are tracked by the name they are configured under; one
removed from the configuration is forgotten at the next start (keep_only), not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from ctrail.event import Alert
from detectors.ops_rules import SILENT_SOURCE, ops_alert

Clock = Literal["arrival", "event"]
CLOCKS: Final[tuple[Clock, ...]] = ("arrival", "event")


class SilenceConfig(BaseModel):
    """CT-OPS-001's quiet periods."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    quiet_secs: PositiveFloat = Field(
        900, description="How long a source that was sending may stay quiet before CT-OPS-001 "
        "fires (the default for every source).")
    sources: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Quiet period per source name (as configured under "
        "`sources:`), for sources that send more or less often than the default.")

    def quiet_of(self, source: str) -> float:
        return self.sources.get(source, self.quiet_secs)


@dataclass(slots=True)
class Heard:
    arrival: float              # wall time of the newest record (epoch seconds)
    event: float | None         # newest event time, when a record gave an event
    silent: dict[str, float]    # clock -> the time it was last heard on it, while silent


class SilenceWatch:
    """Sources heard from, and which are silent now (a Stateful part)."""

    def __init__(self, config: SilenceConfig) -> None:
        self.config = config
        self.sources: dict[str, Heard] = {}
        self.dirty = False

    def heard(self, source: str, arrival: datetime, event_time: datetime | None) -> None:
        """A record of `source` received at `arrival`, with its event's time if it parsed."""
        t = arrival.timestamp()
        # An event stamped after it arrived (a sender's clock ahead) counts as of its arrival:
        # one skewed source must not move the event clock and make the others look silent.
        e = min(event_time.timestamp(), t) if event_time is not None else None
        seen = self.sources.get(source)
        if seen is None:
            self.sources[source] = Heard(t, e, {})
        else:
            seen.arrival = max(seen.arrival, t)
            if e is not None:
                seen.event = e if seen.event is None else max(seen.event, e)
        self.dirty = True

    def event_clock(self) -> float | None:
        times = [s.event for s in self.sources.values() if s.event is not None]
        return max(times) if times else None

    def check(self, now: datetime, arrivals_current: bool = True) -> list[Alert]:
        """Silences that began and ended since the last check, as alerts. `arrivals_current`
        False: records received are still waiting to be processed (a backlog), so the arrival
        clock cannot tell a silent source from a late one and is not judged this time."""
        if not self.config.enabled:
            return []
        clock = self.event_clock()
        wall = now.timestamp() if arrivals_current else None
        out: list[Alert] = []
        for name, seen in sorted(self.sources.items()):
            quiet = self.config.quiet_of(name)
            for which, last, current in (("arrival", seen.arrival, wall),
                                         ("event", seen.event, clock)):
                if last is None or current is None:
                    continue
                silent = current - last > quiet
                was = which in seen.silent
                if silent and not was:
                    seen.silent[which] = last
                    out.append(self._alert(name, which, last, last + quiet,
                                           f"has sent nothing for {current - last:.0f} s",
                                           quiet, begins=True))
                elif was and not silent:
                    since = seen.silent.pop(which)
                    out.append(self._alert(name, which, since, last,
                                           f"is sending again after {last - since:.0f} s",
                                           quiet, begins=False))
                self.dirty = self.dirty or silent != was
        return out

    def status(self) -> dict[str, dict[str, bool]]:
        """Every source heard from, and whether it is silent on each clock (for /readyz and
        /metrics, which read this one answer)."""
        return {name: {clock: clock in seen.silent for clock in CLOCKS}
                for name, seen in sorted(self.sources.items())}

    def _alert(self, source: str, clock: str, since: float, at: float, what: str,
               quiet: float, begins: bool) -> Alert:
        """`since`: when the source was last heard before the silence; `at`: the alert's time
        (the end of the quiet period, or the record that ended the silence)."""
        measure = "arrival time" if clock == "arrival" else "event time"
        return ops_alert(SILENT_SOURCE, f"{source}|{clock}", since, at,
                         f"Source {source} {what} of {measure} (quiet period {quiet:.0f} s).",
                         begins, (f"ctrail.source={source}", f"ctrail.clock={clock}"))

    def keep_only(self, names: set[str]) -> None:
        """Forget sources no longer configured: a source removed on purpose is not silent."""
        for name in set(self.sources) - names:
            del self.sources[name]
            self.dirty = True

    def snapshot(self) -> dict[str, Any]:
        return {name: [s.arrival, s.event, s.silent] for name, s in self.sources.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.sources = {name: Heard(arrival, event, dict(silent))
                        for name, (arrival, event, silent) in state.items()}
