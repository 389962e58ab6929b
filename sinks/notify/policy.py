"""Pacing and patience per receiver: a token bucket, a circuit breaker, backoff with jitter.

All take the time as an argument (seconds since the epoch), so tests drive them with a simulated
clock and the sender loop with the real one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """`rate` requests per second sustained, `burst` at once (Slack: about 1/s per channel)."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:                  # first use: a full bucket
            self.tokens, self.updated = float(self.burst), now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens + 1e-9)

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def drain(self, now: float) -> None:
        """The receiver said 429: whatever we thought we had, we have nothing."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)

    def next_token_at(self, now: float) -> float:
        self._refill(now)
        return now if self.tokens >= 1 else now + (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class Breaker:
    """Closed → (N consecutive failures) → open for `reset_secs` → half-open: one trial request.

    Backoff alone would keep probing a dead receiver every max_backoff; the breaker says so
    out loud (the sender logs each transition) and keeps the probes to one per reset period."""

    failures_to_open: int
    reset_secs: float
    failures: int = 0
    opened_at: float | None = None

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"

    def allows(self, now: float) -> bool:
        return self.opened_at is None or now >= self.opened_at + self.reset_secs

    def reopens_at(self) -> float:
        return 0.0 if self.opened_at is None else self.opened_at + self.reset_secs

    def success(self) -> bool:
        """Record a success; True when this closed an open breaker."""
        was_open = self.opened_at is not None
        self.failures, self.opened_at = 0, None
        return was_open

    def failure(self, now: float) -> bool:
        """Record a failure; True when this opened (or re-opened) the breaker."""
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.opened_at = now
            return True
        return False


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": half fixed, half random, so many senders that
    failed together do not retry together; never sooner than the receiver's Retry-After."""

    initial_secs: float
    max_secs: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_secs: float | None = None) -> float:
        ceiling = min(self.max_secs, self.initial_secs * 2 ** max(0, attempt - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        return max(delay, retry_after_secs or 0.0)
