"""A detection stage's state: its correlation windows (if any) and alert suppression, restored
from data_dir/detection/<stage>.json and checkpointed there before the runner commits."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ctrail.event import Alert
from detectors.suppression import SuppressionConfig
from detectors.window_state import Checkpoint, CorrelationEngine, StageState, Stateful


class StageWindows:
    def __init__(self, suppression: SuppressionConfig | None, data_dir: Path, stage: str,
                 engine: CorrelationEngine | None,
                 history: Stateful | None = None) -> None:
        self.suppressor = suppression.build() if suppression is not None else None
        parts: dict[str, Stateful] = {"suppression": self.suppressor} if self.suppressor else {}
        if engine is not None:
            parts["windows"] = engine
        if history is not None:                 # first-seen and spike state
            parts["history"] = history
        checkpoint = Checkpoint(data_dir / "detection" / f"{stage}.json")
        self.state = StageState(checkpoint, parts) if parts else None

    def admit(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts suppression lets through now."""
        if self.suppressor is None:
            return alerts
        return [passed for alert in alerts for passed in self.suppressor.admit(alert)]

    def finish(self, alerts: list[Alert], advance: Callable[[datetime], list[Alert]]
               ) -> list[Alert]:
        """End of a batch: `alerts` (admitted) plus what became due as time moved, with the
        state checkpointed (and the alerts kept in its outbox) before they are returned."""
        now = datetime.now(timezone.utc)
        due = self.admit(advance(now)) + (self.suppressor.advance(now) if self.suppressor else [])
        if self.state is None:
            return [*alerts, *due]
        return self.state.finish([*alerts, *due])

    def close(self) -> None:
        if self.state is not None:
            self.state.save()
