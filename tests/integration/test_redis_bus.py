"""The Redis Streams bus against a real Redis: once per key, takeover, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from routing.bus import RetryPolicy
from routing.redis_bus import RedisStreamBus

TOPIC = "inbound"
FAST = RetryPolicy(max_attempts=2, lease=timedelta(milliseconds=50))


@pytest.fixture
async def bus(redis_client: Any, redis_prefix: str) -> AsyncIterator[RedisStreamBus]:
    yield RedisStreamBus(redis_client, FAST, prefix=redis_prefix)
    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await redis_client.delete(*keys)


async def test_publish_once_per_key_and_claim_then_ack(bus: RedisStreamBus) -> None:
    assert await bus.publish(TOPIC, "imap:1:1", '{"n": 1}') is True
    assert await bus.publish(TOPIC, "imap:1:1", '{"n": 1}') is False
    assert await bus.publish(TOPIC, "imap:1:2", '{"n": 2}') is True
    batch = await bus.claim(TOPIC, "w1", limit=10)
    assert [(d.key, d.payload, d.attempts) for d in batch] == [
        ("imap:1:1", '{"n": 1}', 1), ("imap:1:2", '{"n": 2}', 1)
    ]
    assert await bus.claim(TOPIC, "w2", limit=10) == []  # both are leased to w1
    for delivery in batch:
        assert await bus.ack(delivery) is True
    assert await bus.pending(TOPIC) == 0


async def test_a_dead_workers_entries_are_taken_over(bus: RedisStreamBus) -> None:
    await bus.publish(TOPIC, "k", "{}")
    [lost] = await bus.claim(TOPIC, "dead-worker")
    await asyncio.sleep(0.1)  # the lease (50 ms) runs out
    [taken] = await bus.claim(TOPIC, "w2")
    assert taken.id == lost.id and taken.attempts == 2
    assert await bus.ack(taken) is True


async def test_failed_entry_retries_then_goes_to_dead_letters_and_replays(
    bus: RedisStreamBus,
) -> None:
    await bus.publish(TOPIC, "poison", "payload")
    [first] = await bus.claim(TOPIC, "w")
    assert await bus.fail(first, "boom 1") is False
    await asyncio.sleep(0.1)
    [second] = await bus.claim(TOPIC, "w")
    assert second.attempts == 2
    assert await bus.fail(second, "boom 2") is True
    assert await bus.claim(TOPIC, "w") == []
    [dead] = await bus.dead_letters(TOPIC)
    assert dead["key"] == "poison" and dead["error"] == "boom 2"
    assert await bus.replay(TOPIC, dead["id"]) is True
    [again] = await bus.claim(TOPIC, "w")
    assert again.payload == "payload" and again.attempts == 1
    assert await bus.dead_letters(TOPIC) == []


async def test_entry_that_kills_every_worker_ends_dead(bus: RedisStreamBus) -> None:
    await bus.publish(TOPIC, "crasher", "{}")
    for _ in range(FAST.max_attempts):
        assert len(await bus.claim(TOPIC, "w")) == 1
        await asyncio.sleep(0.1)
    assert await bus.claim(TOPIC, "w") == []
    [dead] = await bus.dead_letters(TOPIC)
    assert "lease expired" in dead["error"]


async def test_touch_keeps_a_slow_entry_from_being_taken_over(bus: RedisStreamBus) -> None:
    await bus.publish(TOPIC, "slow", "{}")
    [mine] = await bus.claim(TOPIC, "w1")
    await asyncio.sleep(0.1)
    await bus.touch(mine)  # still working on it
    assert await bus.claim(TOPIC, "w2") == []
    assert await bus.ack(mine) is True


async def test_a_failed_entry_is_retried_after_the_backoff_not_the_whole_lease(
    redis_client: Any, redis_prefix: str
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(minutes=5))
    bus = RedisStreamBus(redis_client, policy, prefix=redis_prefix)
    try:
        await bus.publish(TOPIC, "flaky", "{}")
        [first] = await bus.claim(TOPIC, "w1")
        assert await bus.fail(first, "database busy") is False
        [again] = await bus.claim(TOPIC, "w2")
        assert again.id == first.id and again.attempts == 2
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")]
        if keys:
            await redis_client.delete(*keys)


async def test_a_batch_is_acknowledged_and_renewed_in_one_round_trip(bus: RedisStreamBus) -> None:
    for i in range(3):
        await bus.publish(TOPIC, f"k{i}", "{}")
    batch = await bus.claim(TOPIC, "w1", limit=10)
    await asyncio.sleep(0.1)  # the leases (50 ms) run out
    await bus.touch_many(batch)  # still working on all of them
    assert await bus.claim(TOPIC, "w2", limit=10) == []
    assert [d.attempts for d in batch] == [1, 1, 1]
    assert await bus.ack_many(batch) == 3
    assert await bus.ack_many(batch) == 0  # already acknowledged
    assert await bus.pending(TOPIC) == 0
