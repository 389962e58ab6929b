"""The sender loop: outbox rows to their receivers, paced, retried, and marked only after a 2xx.

Per receiver, in outbox order (so one group's alerts go out in the order they were raised):
1. wait while backing off or while the breaker is open (then one trial request: half-open);
2. take the pending rows, ask the receiver to plan at most as many requests as the token
   bucket allows (a storm bigger than the budget becomes a digest: one request for N alerts);
3. send them one by one; a 2xx marks the rows delivered, a 4xx marks them rejected (kept,
   with the reason), anything else stops this receiver until its backoff (Retry-After when
   given) has passed. A failing receiver never delays the others.
PagerDuty, Opsgenie and Jira receivers also get a resolve for every group quiet for
`resolve_after_secs`. Receivers that can show a report (email, Slack, Teams) then get the
rendered reports queued for them, one request each, paced and retried like alerts.

Time is read from an injected clock, so tests can run a two-minute outage in milliseconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pydantic import ValidationError

from sinks.notify.message import Message, Notifier, Outcome, Result
from sinks.notify.outbox import Outbox
from sinks.notify.policy import Backoff, Breaker, TokenBucket
from sinks.notify.report_notice import ReportNotice

log = logging.getLogger(__name__)
PRUNE_EVERY_SECS = 3600.0
# Kinds of message whose delivery opens (or keeps open) the group's incident at the receiver.
INCIDENT_KINDS = frozenset({"trigger", "comment"})


@dataclass(frozen=True, slots=True)
class Patience:
    """The delivery knobs every receiver shares (`notify.delivery`)."""

    initial_backoff_secs: float = 1.0
    max_backoff_secs: float = 300.0
    breaker_failures: int = 5
    breaker_reset_secs: float = 60.0
    poll_interval_secs: float = 1.0
    retention_secs: float = 7 * 86400.0


@dataclass(slots=True)
class ReceiverState:
    notifier: Notifier
    bucket: TokenBucket
    breaker: Breaker
    failures: int = 0
    not_before: float = 0.0
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


class Sender:
    def __init__(self, outbox: Outbox, notifiers: Sequence[Notifier], patience: Patience,
                 quiet_digest: bool = True, clock: Callable[[], float] = time.time,
                 backoff: Backoff | None = None) -> None:
        self.outbox = outbox
        self.patience = patience
        self.quiet_digest = quiet_digest
        self.clock = clock
        self.backoff = backoff or Backoff(patience.initial_backoff_secs,
                                          patience.max_backoff_secs)
        self.receivers = {n.name: ReceiverState(
            n, TokenBucket(n.rate_per_sec, n.burst),
            Breaker(patience.breaker_failures, patience.breaker_reset_secs)) for n in notifiers}
        self._next_prune = 0.0

    def tick(self) -> float:
        """Do what is due now; returns when something will next be due (epoch seconds)."""
        now = self.clock()
        if now >= self._next_prune:
            self.outbox.prune(now - self.patience.retention_secs)
            self._next_prune = now + PRUNE_EVERY_SECS
        self.outbox.release_held(now, self.quiet_digest)
        wakes = [self._serve(state, now) for state in self.receivers.values()]
        release = self.outbox.next_release_at()
        return min([*wakes, release if release is not None else math.inf,
                    now + self.patience.poll_interval_secs])

    def _serve(self, state: ReceiverState, now: float) -> float:
        if now < state.not_before:
            return state.not_before
        if not state.breaker.allows(now):
            return state.breaker.reopens_at()
        notifier = state.notifier
        batch = self.outbox.pending(notifier.name, getattr(notifier, "max_digest_alerts", 1000))
        wake = math.inf
        if batch:
            budget = state.bucket.available(now)
            if budget < 1:
                return state.bucket.next_token_at(now)
            if state.breaker.state == "open":
                budget = 1                      # half-open: one trial request
            for message in notifier.messages(batch, budget):
                if not self._send(state, message):
                    return state.not_before
            now = self.clock()
            wake = state.bucket.next_token_at(now)
        resolve = self._resolve(state, now)
        now = self.clock()
        if now < state.not_before:              # a resolve failed: the receiver waits
            return min(wake, resolve)
        return min(wake, resolve, self._reports(state, now))

    def _reports(self, state: ReceiverState, now: float) -> float:
        plan = getattr(state.notifier, "report_message", None)
        if plan is None:
            return math.inf
        name = state.notifier.name
        for seq, raw in self.outbox.pending_reports(name, 10):
            if state.bucket.available(now) < 1:
                return state.bucket.next_token_at(now)
            try:
                notice = ReportNotice.model_validate_json(raw)
            except ValidationError as exc:      # never retried: it would block the rest
                self.outbox.mark_rejected(name, (seq,), f"unreadable notice: {exc}"[:300],
                                          "report")
                continue
            if not self._send(state, plan(seq, notice)):
                return state.not_before
            now = self.clock()
        return math.inf

    def _resolve(self, state: ReceiverState, now: float) -> float:
        notifier = state.notifier
        if not hasattr(notifier, "resolve_message"):
            return math.inf
        # None: resolved only when a person closes the alert (the console).
        quiet = getattr(notifier, "resolve_after_secs", None)
        for group_key, dedup_key in self.outbox.incidents_due(notifier.name, quiet, now):
            if state.bucket.available(now) < 1:
                return state.bucket.next_token_at(now)
            if not self._send(state, notifier.resolve_message(group_key, dedup_key)):
                return state.not_before
            self.outbox.incident_resolved(notifier.name, group_key, now - (quiet or 0.0))
        if quiet is None:
            return math.inf
        due = self.outbox.next_resolve_at(notifier.name, quiet)
        return due if due is not None and due > now else math.inf

    def _send(self, state: ReceiverState, message: Message) -> bool:
        """One request, settled in the outbox; False when the receiver must wait."""
        state.bucket.take(self.clock())
        result = state.notifier.post(message)
        now = self.clock()
        name = state.notifier.name
        if result.outcome is Outcome.RETRY:
            self._failed(state, message, result, now)
            return False
        if result.outcome is Outcome.DELIVERED:
            self.outbox.mark_delivered(name, message.seqs, now, message.kind)
            if message.kind in INCIDENT_KINDS and message.group_key is not None:
                self.outbox.incident_opened(name, message.group_key,
                                            result.reference or message.key)
        else:
            self.outbox.mark_rejected(name, message.seqs, result.detail, message.kind)
            log.warning("A receiver rejected a message; its alerts are kept as rejected.",
                        extra={"receiver": name, "status": result.status, "kind": message.kind,
                               "alerts": len(message.seqs), "detail": result.detail})
        state.sent[message.kind] = state.sent.get(message.kind, 0) + 1
        state.failures = 0
        if state.breaker.success():
            log.info("A receiver is reachable again; its circuit is closed.",
                     extra={"receiver": name})
        return True

    def _failed(self, state: ReceiverState, message: Message, result: Result, now: float) -> None:
        name = state.notifier.name
        state.failures += 1
        state.failed[message.kind] = state.failed.get(message.kind, 0) + 1
        delay = self.backoff.delay(state.failures, result.retry_after_secs)
        state.not_before = now + delay
        if result.status == 429:
            state.bucket.drain(now)
        if message.seqs:
            self.outbox.note_failure(name, message.seqs, result.detail, message.kind)
        if state.breaker.failure(now):
            state.not_before = max(state.not_before, state.breaker.reopens_at())
            log.warning("A receiver keeps failing; its circuit is open.", extra={
                "receiver": name, "failures": state.failures,
                "reset_secs": state.breaker.reset_secs})
        log.warning("Delivery failed; it will be retried.", extra={
            "receiver": name, "status": result.status, "detail": result.detail,
            "alerts": len(message.seqs), "backoff_secs": round(delay, 3)})

    def run(self, stop: threading.Event, kick: threading.Event) -> None:
        """Deliver until `stop`; `kick` wakes the loop early (new rows in the outbox)."""
        while not stop.is_set():
            try:
                wake = self.tick()
            except Exception:   # a bug or a full disk must not end delivery: log, try again
                log.exception("Delivery loop failed; retrying.")
                wake = self.clock() + 1.0
            timeout = min(max(wake - self.clock(), 0.01), self.patience.poll_interval_secs)
            kick.wait(timeout)
            kick.clear()
