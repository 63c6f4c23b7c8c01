"""``routing.pubsub.subscribe_forever`` against the real Redis and an unreachable one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis

from routing.pubsub import subscribe_forever


async def _run(redis: Any, channel: str) -> tuple[asyncio.Task[None], asyncio.Event,
                                                   asyncio.Event, asyncio.Queue[Any]]:
    subscribed, first_attempt = asyncio.Event(), asyncio.Event()
    received: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(subscribe_forever(
        redis, channel, received.put_nowait, subscribed, name="test",
        first_attempt=first_attempt))
    await asyncio.wait_for(first_attempt.wait(), 30)
    return task, subscribed, first_attempt, received


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_messages_arrive_once_subscribed(redis_client: Any, redis_prefix: str) -> None:
    channel = f"{redis_prefix}:events"
    task, subscribed, _first, received = await _run(redis_client, channel)
    try:
        assert subscribed.is_set()
        await redis_client.publish(channel, "hello")
        assert await asyncio.wait_for(received.get(), 30) == b"hello"
    finally:
        await _stop(task)


async def test_redis_down_the_first_attempt_settles_without_a_subscription() -> None:
    """A web node starting while Redis is down learns it from the first try (and goes on
    serving, retrying in the background) instead of waiting out a timeout."""
    unreachable = Redis.from_url("redis://127.0.0.1:1/0")
    task, subscribed, first_attempt, _received = await _run(unreachable, "cc:nowhere")
    try:
        assert first_attempt.is_set() and not subscribed.is_set()
        assert not task.done()  # still trying
    finally:
        await _stop(task)
        await unreachable.aclose()
