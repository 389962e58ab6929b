"""Per-client limits of a listener: open connections, and requests per second (a token bucket).
The forward input uses the first only.

A client is its peer address. Both limits exist so that one client, authenticated or not, cannot
take the slots and threads every sender shares (kube-apiserver's webhook backend, Falco,
registries): a flood from one address is answered 429 with Retry-After, cheaply, while the
others are served.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Final

FORGET_AFTER_SECS: Final = 60.0       # an idle client's bucket is dropped after this
PRUNE_ABOVE: Final = 4096             # ... once this many clients are remembered


@dataclass
class _Bucket:
    tokens: float
    at: float


class ClientLimits:
    def __init__(self, max_connections: int, requests_per_sec: float = 0.0,
                 burst: int = 0) -> None:
        """`requests_per_sec` and `burst` matter only to `request` (HTTP)."""
        self.max_connections = max_connections
        self.rate = requests_per_sec
        self.burst = burst
        self._open: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def connect(self, client: str) -> bool:
        """Count a connection of `client`; False (not counted) when it has too many open."""
        with self._lock:
            count = self._open.get(client, 0)
            if count >= self.max_connections:
                return False
            self._open[client] = count + 1
            return True

    def disconnect(self, client: str) -> None:
        with self._lock:
            count = self._open.get(client, 0) - 1
            if count > 0:
                self._open[client] = count
            else:
                self._open.pop(client, None)

    def request(self, client: str, now: float | None = None) -> int:
        """Take a request from `client`'s bucket: 0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= PRUNE_ABOVE:
                    self._prune(now)
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def _prune(self, now: float) -> None:
        for client in [c for c, b in self._buckets.items() if now - b.at > FORGET_AFTER_SECS]:
            del self._buckets[client]
