"""The per-visitor token bucket."""

from __future__ import annotations

import pytest

from channels.webchat.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 1.0, clock=clock)
    assert [limiter.allow("v") for _ in range(7)] == [True] * 5 + [False, False]


def test_refills_at_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 1.0, clock=clock)
    for _ in range(5):
        limiter.allow("v")
    assert not limiter.allow("v")
    assert limiter.retry_after("v") == pytest.approx(1.0)
    clock.now += 0.5
    assert not limiter.allow("v")
    clock.now += 0.5
    assert limiter.allow("v")
    assert not limiter.allow("v")
    clock.now += 100  # never more than the burst
    assert [limiter.allow("v") for _ in range(6)] == [True] * 5 + [False]


def test_visitors_have_their_own_buckets() -> None:
    limiter = RateLimiter(1, 1.0, clock=Clock())
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")


def test_refused_attempts_take_no_tokens() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 2.0, clock=clock)
    assert limiter.allow("v")
    for _ in range(10):
        assert not limiter.allow("v")
    clock.now += 0.5
    assert limiter.allow("v")


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 1.0, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.allow(key)
    assert len(limiter) == 3
    clock.now += 10
    limiter.allow("d")  # at the cap: full buckets are pruned first
    assert len(limiter) == 1


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError):
        RateLimiter(5, 0)
