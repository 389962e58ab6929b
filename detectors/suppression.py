"""Alert suppression: repeats of an alert grouped by a configurable key within a window.

The first alert of a key passes at once. Repeats within `window_secs` (on the alerts' own event
time) are counted, not published: when the window closes, one update is emitted: the first
alert with `alert.count` (all alerts of the window) and the contributing event ids (bounded),
the same `alert.group_key`, so a notification can update what it sent rather than send anew, and
a deterministic id of its own. Nothing is dropped silently: `suppressed` counts every repeat.

An alert delivered twice (a redelivered batch) is recognised by its id and not counted twice;
the first one is passed again, since its earlier publication may not have been flushed.
Windows close as the watermark (the newest alert time seen, or the wall clock after a quiet
spell of a window, see `advance`) passes their end.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any, Callable, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ctrail.bus import ALERTS
from ctrail.bus.codec import decode, encode
from ctrail.event import Alert

# alert.group_key is the rule id, user, namespace and pod (or the object an audit event acts
# on, which kubernetes.pod.name does not hold for audit events): the entities of the alert.
DEFAULT_KEY: Final = ("alert.group_key",)
MAX_REMEMBERED_IDS: Final = 1000      # per window, for telling repeats from redeliveries


class SuppressionConfig(BaseModel):
    """Group repeated alerts by `key` within `window_secs`: one alert, then one update with the
    count when the window closes, instead of a flood."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window_secs: PositiveFloat = Field(600, description="How long repeats of a key are folded "
                                       "into the first alert (alert time).")
    key: tuple[str, ...] = Field(DEFAULT_KEY, min_length=1, description="Alert fields (ECS "
                                 "paths) whose values together make the suppression key.")
    max_event_ids: PositiveInt = Field(100, description="Most event ids an update lists.")

    def build(self, clock: Callable[[], float] = time.time) -> "Suppressor":
        return Suppressor(self, clock)


class Window:
    __slots__ = ("first", "start", "count", "ids", "event_ids", "first_json", "saved")

    def __init__(self, first: Alert, start: float) -> None:
        self.first = first
        self.start = start
        self.count = 1
        self.ids = [first.event.id]
        self.event_ids = list(first.alert.event_ids)
        # Checkpoint JSON, kept while unchanged: a batch with an alert checkpoints every open
        # window, and most did not change in it. The first alert never changes.
        self.first_json: orjson.Fragment | None = None
        self.saved: orjson.Fragment | None = None

    def snapshot(self, key: str) -> orjson.Fragment:
        if self.saved is None:
            if self.first_json is None:
                self.first_json = orjson.Fragment(encode(self.first))
            self.saved = orjson.Fragment(orjson.dumps(
                [key, self.first_json, self.start, self.count, self.ids, self.event_ids]))
        return self.saved


class Suppressor:
    def __init__(self, config: SuppressionConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.windows: dict[str, Window] = {}
        self.newest = float("-inf")
        self.newest_wall = 0.0
        self.suppressed = 0
        self.dirty = False

    def admit(self, alert: Alert) -> list[Alert]:
        """What to publish now for this alert: itself when it opens a window, else nothing."""
        t = alert.timestamp.timestamp()
        if t > self.newest:
            self.newest, self.newest_wall = t, self.clock()
        key = self.key(alert)
        window = self.windows.get(key)
        if window is not None and t >= window.start + self.config.window_secs:
            return [*self._close(key), *self.admit(alert)]
        if window is None:
            self.windows[key] = Window(alert, t)
            self.dirty = True
            return [alert]
        if alert.event.id == window.first.event.id:
            return [alert]
        if alert.event.id in window.ids:
            return []
        window.count += alert.alert.count
        window.saved = None
        self.suppressed += 1
        if len(window.ids) < MAX_REMEMBERED_IDS:
            window.ids.append(alert.event.id)
        room = self.config.max_event_ids - len(window.event_ids)
        window.event_ids.extend(i for i in alert.alert.event_ids[:max(room, 0)]
                                if i not in window.event_ids)
        self.dirty = True
        return []

    def advance(self, now: datetime) -> list[Alert]:
        """Updates for the windows that have closed."""
        idle = now.timestamp() - self.newest_wall - self.config.window_secs
        watermark = self.newest + max(0.0, idle)
        due = [k for k, w in self.windows.items() if w.start + self.config.window_secs <= watermark]
        return [alert for key in due for alert in self._close(key)]

    def _close(self, key: str) -> list[Alert]:
        window = self.windows.pop(key)
        self.dirty = True
        if window.count == 1:
            return []
        first = window.first
        update_id = hashlib.blake2b(f"{first.event.id}\x00update".encode(),
                                    digest_size=16).hexdigest()
        return [first.model_copy(update={
            "event": first.event.model_copy(update={"id": update_id}),
            "alert": first.alert.model_copy(update={
                "count": window.count,
                "event_ids": tuple(window.event_ids[:self.config.max_event_ids])})})]

    def key(self, alert: Alert) -> str:
        document = alert.model_dump(by_alias=True, exclude_none=True)
        values = []
        for path in self.config.key:
            value: Any = document
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        return orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS).decode()

    def snapshot(self) -> dict[str, Any]:
        return {"newest": self.newest if self.windows else None, "suppressed": self.suppressed,
                "windows": [w.snapshot(key) for key, w in self.windows.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("newest") is not None:
            self.newest, self.newest_wall = state["newest"], self.clock()
        self.suppressed = state.get("suppressed", 0)
        for key, first, start, count, ids, event_ids in state.get("windows", ()):
            window = Window(decode(ALERTS, orjson.dumps(first)), start)  # type: ignore[arg-type]
            window.count, window.ids, window.event_ids = count, ids, event_ids
            self.windows[key] = window


