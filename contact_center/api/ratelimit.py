"""Per-token rate limits in fixed one-minute windows: in memory when embedded, in Redis
when scale-out (so every web node counts against the same budget)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Verdict:
    """Whether the request may go ahead; when not, how long to wait."""

    allowed: bool
    remaining: int
    retry_after: int = 0


class RateLimiter(Protocol):
    """Counts requests per key in the current window."""

    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one request; refuse it beyond ``limit`` per window."""
        ...


def _window(now: float) -> tuple[int, int]:
    start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    return start, max(1, math.ceil(start + WINDOW_SECONDS - now))


class MemoryRateLimiter:
    """One process's counters (embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one request for ``key``."""
        start, left = _window(self.clock())
        window, count = self._counts.get(key, (start, 0))
        if window != start:
            count = 0
            if len(self._counts) > 100_000:  # old windows of idle tokens
                self._counts = {k: v for k, v in self._counts.items() if v[0] == start}
        count += 1
        self._counts[key] = (start, count)
        if count > limit:
            return Verdict(False, 0, left)
        return Verdict(True, limit - count)


class RedisRateLimiter:
    """Counters shared by every node: INCR on a key per window, expiring with it."""

    def __init__(self, redis: Any, prefix: str = "cc:api:rl",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock

    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one request for ``key`` in Redis."""
        start, left = _window(self.clock())
        name = f"{self.prefix}:{key}:{start}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS + 5)
            count, _ = await pipe.execute()
        if int(count) > limit:
            return Verdict(False, 0, left)
        return Verdict(True, limit - int(count))
