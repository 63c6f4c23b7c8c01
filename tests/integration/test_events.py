"""Events reach in-process listeners and, in scale-out, other nodes over Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from routing.events import TICKET_CREATED, Event, EventBus, RedisEventForwarder


async def test_listeners_get_their_events_and_a_failing_one_stops_nobody() -> None:
    bus = EventBus()
    got: list[str] = []

    async def broken(_event: Event) -> None:
        raise RuntimeError("listener bug")

    async def recorder(event: Event) -> None:
        got.append(event.name)

    bus.subscribe(TICKET_CREATED, broken)
    bus.subscribe(TICKET_CREATED, recorder)
    bus.subscribe("*", recorder)
    await bus.publish([Event(TICKET_CREATED, {"ticket_id": 1}), Event("other", {})])
    assert got == [TICKET_CREATED, TICKET_CREATED, "other"]


async def test_events_are_forwarded_over_redis_pubsub(redis_client: Any, redis_prefix: str) -> None:
    channel = f"{redis_prefix}:events"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    bus = EventBus()
    bus.forwarders.append(RedisEventForwarder(redis_client, channel))
    await bus.publish([Event(TICKET_CREATED, {"ticket_id": 7, "subject": "发票问题"})])
    message = None
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
        await asyncio.sleep(0.01)
    await pubsub.unsubscribe(channel)
    await pubsub.aclose()
    assert message is not None
    payload = json.loads(message["data"])
    assert payload["name"] == TICKET_CREATED
    assert payload["data"] == {"ticket_id": 7, "subject": "发票问题"}
