"""The notify stage's two halves in one process: `enqueue` (the stage handler's work) and the
sender thread.

`enqueue` routes a batch of alerts and writes the outbox rows in one durable transaction; the
stage runner commits the bus offsets only after it returns, so a kill -9 at any point either
redelivers the batch (and INSERT OR IGNORE makes that a no-op) or finds it in the outbox.

Only one sender may read an outbox: two would both send a pending row. A lock file beside the
outbox (flock, released by the kernel when its process dies, even by kill -9) makes a second
process on the same data directory (`ctrail ingest` beside `ctrail run`) enqueue only; its rows
are delivered by the process that holds the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ctrail.errors import Retryable
from ctrail.event import Alert, Severity
from ctrail.runtime.telemetry import Sample
from sinks.notify.delivery import Sender
from sinks.notify.message import install_log_redaction
from sinks.notify.outbox import NewRow, Outbox
from sinks.notify.routing import hold_until, route

if TYPE_CHECKING:
    from sinks.notify.config import NotifyConfig

log = logging.getLogger(__name__)


class NotifyService:
    def __init__(self, config: NotifyConfig, data_dir: Path,
                 clock: Callable[[], float] | None = None) -> None:
        install_log_redaction()
        self.config = config
        self.clock = clock or time.time
        self.notifiers = [receiver.build(name, config.kibana_url)
                          for name, receiver in config.receivers.items()]
        # Groups are tracked for receivers that resolve them, or that need to know the
        # incident they opened (Jira comments on its issue, resolved or not). One that can
        # resolve is tracked even without a quiet period: a person may close the alert in
        # the console (Outbox.request_resolve).
        self._incident_receivers = {n.name for n in self.notifiers
                                    if hasattr(n, "resolve_message")
                                    or getattr(n, "keeps_incidents", False)}
        self.directory = data_dir / "notify"
        self.outbox = Outbox(self.directory / "outbox.sqlite3")
        self.sender = Sender(self.outbox, self.notifiers, config.delivery.patience(),
                             quiet_digest=config.quiet_hours is None or config.quiet_hours.digest,
                             clock=self.clock)
        self.counters: Counter[str] = Counter()
        self._min = Severity.from_word(config.min_severity)
        self._stop, self._kick = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, items: Sequence[object]) -> int:
        """Route alerts into the outbox, durably; returns the rows that were new.
        Raises Retryable when the outbox cannot be written (the input stays uncommitted)."""
        now = self.clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        names = list(self.config.receivers)
        rows: list[NewRow] = []
        for item in items:
            if not isinstance(item, Alert):
                continue
            chosen = route(item, names, self.config.routes, self._min)
            self.counters["routed" if chosen else "not_routed"] += 1
            release = hold_until(item, self.config.quiet_hours, moment)
            rows.extend(NewRow(name, item, release.timestamp() if release else None,
                               name in self._incident_receivers) for name in chosen)
        if not rows:
            return 0
        try:
            new = self.outbox.enqueue(rows, now)
        except sqlite3.Error as exc:
            raise Retryable(f"the notify outbox cannot be written: {exc}") from None
        self.counters["enqueued"] += new
        self.counters["already_enqueued"] += len(rows) - new
        self._kick.set()
        return new

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._deliver, name="notify-sender",
                                             daemon=True)
            self._thread.start()

    def _deliver(self) -> None:
        lock = os.open(self.directory / "sender.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            said = False
            while not self._stop.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not said:
                        log.info("Another process delivers from this outbox; enqueueing only.",
                                 extra={"outbox": str(self.outbox.path)})
                        said = True
                    self._stop.wait(self.config.delivery.poll_interval_secs)
            if not self._stop.is_set():
                self.sender.run(self._stop, self._kick)
        finally:
            os.close(lock)          # releases the flock

    def status(self) -> dict[str, object]:
        return {"outbox": self.outbox.counts(), "counters": dict(self.counters),
                "receivers": {name: {"breaker": s.breaker.state, "failures": s.failures,
                                     "sent": dict(s.sent)}
                              for name, s in self.sender.receivers.items()}}

    def samples(self) -> list[Sample]:
        """For /metrics: the outbox by receiver and state, what each receiver was sent (single
        messages and digests) and what failed, its circuit breaker, report deliveries by
        state, and alerts routed to nobody."""
        out = [Sample("notify_outbox_items", "gauge", "alerts in the notify outbox, by state "
                      "(pending, held for quiet hours, delivered, rejected)", count,
                      {"receiver": receiver, "state": state})
               for (receiver, state), count in self.outbox.counts_by_receiver().items()]
        for name, state in self.sender.receivers.items():
            out += [Sample("notify_sent_total", "counter", "requests a receiver accepted, by "
                           "kind (alert, digest, trigger, comment, resolve, report)", count, {"receiver": name, "kind": kind})
                    for kind, count in dict(state.sent).items()]   # a copy: the sender adds
            out += [Sample("notify_failed_total", "counter", "requests that failed and will be "
                           "retried, by kind (alert, digest, trigger, comment, resolve, report)",
                           count, {"receiver": name, "kind": kind})
                    for kind, count in dict(state.failed).items()]
            out.append(Sample("notify_circuit_open", "gauge", "1 while the receiver's circuit "
                              "breaker is open (deliveries paused)",
                              1.0 if state.breaker.state == "open" else 0.0, {"receiver": name}))
        out += [Sample("notify_report_deliveries", "gauge", "rendered reports in the notify "
                       "outbox, by state (pending: not delivered yet, retried)", count,
                       {"receiver": receiver, "state": state})
                for (receiver, state), count in self.outbox.report_counts().items()]
        out.append(Sample("notify_not_routed_total", "counter", "alerts no route sent anywhere",
                          self.counters["not_routed"]))
        return out

    def close(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join()     # finishes the request in flight and marks it
            self._thread = None
        for notifier in self.notifiers:
            notifier.close()
        self.outbox.close()
