"""One Redis pub/sub subscription kept alive: messages handed over as they come, the
connection re-opened (0.5 s, doubling to 30 s) whenever it is lost.

Used by every web node for what other nodes publish: console events (``cc:events``) and
web-chat frames. Redis pub/sub keeps nothing for a subscriber that is away, so a node
also learns, through ``subscribed``, whether it is listening right now.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 30.0


async def subscribe_forever(redis: Any, channel: str, on_message: Callable[[Any], None],
                            subscribed: asyncio.Event, *, name: str,
                            first_attempt: asyncio.Event | None = None,
                            **context: Any) -> None:
    """Hand every message published on ``channel`` to ``on_message`` until cancelled;
    ``subscribed`` is set while the subscription stands, ``first_attempt`` once the first
    try has either subscribed or failed (a node starting while Redis is down need not
    wait for it). ``name`` prefixes the log events (``<name>.redis_subscribed``,
    ``<name>.redis_subscription_lost``)."""
    delay = FIRST_RETRY_SECONDS
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message.get("type") == "subscribe":
                    subscribed.set()
                    if first_attempt is not None:
                        first_attempt.set()
                    delay = FIRST_RETRY_SECONDS
                    log.info(f"{name}.redis_subscribed", channel=channel, **context)
                elif message.get("type") == "message":
                    on_message(message.get("data"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            subscribed.clear()
            if first_attempt is not None:
                first_attempt.set()
            log.warning(f"{name}.redis_subscription_lost", channel=channel,
                        error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_RETRY_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
