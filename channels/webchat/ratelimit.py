"""A token bucket per visitor: a burst of messages, then a sustained rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``burst`` messages at once and ``per_second`` sustained, per key.

    Buckets that have refilled completely are forgotten (they are equal to a new one), so
    memory stays bounded by the visitors active within the last ``burst / per_second``
    seconds.
    """

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("burst must be at least 1 and per_second above 0")
        self.burst = burst
        self.per_second = per_second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from the key's bucket; ``False`` (nothing taken) when empty."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self.prune()
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
        if bucket.tokens + 1e-9 < cost:
            return False
        bucket.tokens -= cost
        return True

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available for the key (0 when they are now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        elapsed = max(0.0, self.clock() - bucket.updated)
        tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
        return max(0.0, (cost - tokens) / self.per_second)

    def prune(self) -> int:
        """Forget every bucket that is full again; returns how many were dropped."""
        now = self.clock()
        full_after = self.burst / self.per_second
        stale = [k for k, b in self._buckets.items() if now - b.updated >= full_after]
        for key in stale:
            del self._buckets[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._buckets)
