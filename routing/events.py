"""Domain events: names as constants, in-process subscribers, Redis pub/sub for scale-out.

Events are collected while a message is processed and published only after its
transaction commits, so no listener ever sees a rolled-back change. Their webhook
deliveries are written before, in that same transaction (:func:`record_webhooks`), so a
crash between the commit and the publication loses no delivery.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Database
from crm_core.models import utcnow
from crm_core.services import webhooks

log = structlog.get_logger(__name__)

CUSTOMER_CREATED = "customer.created"
CUSTOMER_UPDATED = "customer.updated"
CUSTOMER_DELETED = "customer.deleted"
CUSTOMER_MERGED = "customer.merged"
CUSTOMER_ERASED = "customer.erased"
INTERACTION_LOGGED = "interaction.logged"
TICKET_CREATED = "ticket.created"
TICKET_UPDATED = "ticket.updated"
CONVERSATION_ASSIGNED = "conversation.assigned"
NOTIFICATION = "notification"
MESSAGE_SENT = "message.sent"
"""An outbox message the channel accepted (data: outbox, interaction, conversation ids)."""
MESSAGE_FAILED = "message.failed"
"""An outbox message that failed for good (after its retries, or refused permanently)."""
ALL_EVENTS = (
    CUSTOMER_CREATED, INTERACTION_LOGGED, TICKET_CREATED, TICKET_UPDATED,
    CONVERSATION_ASSIGNED, NOTIFICATION, MESSAGE_SENT, MESSAGE_FAILED,
)


@dataclass(frozen=True)
class Event:
    """Something that happened, with the ids a listener needs to look it up."""

    name: str
    data: dict[str, Any]
    at: datetime = field(default_factory=utcnow)

    def to_json(self) -> str:
        """The event as JSON, for Redis pub/sub and websockets."""
        return json.dumps(
            {"name": self.name, "data": self.data, "at": self.at.isoformat()},
            ensure_ascii=False,
            default=str,
        )


Listener = Callable[[Event], Awaitable[None]]


class EventSink(Protocol):
    """Where committed events go."""

    async def publish(self, events: Iterable[Event]) -> None:
        """Deliver events, in order."""
        ...


class EventBus:
    """In-process publish/subscribe; a failing listener is logged and never stops the others."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = defaultdict(list)
        self.forwarders: list[EventSink] = []

    def subscribe(self, name: str, listener: Listener) -> None:
        """Call ``listener`` for every event named ``name`` (``*`` for all)."""
        self._listeners[name].append(listener)

    async def publish(self, events: Iterable[Event]) -> None:
        """Deliver to local listeners, then to forwarders (e.g. Redis for other nodes)."""
        batch = list(events)
        for event in batch:
            for listener in (*self._listeners.get(event.name, ()), *self._listeners.get("*", ())):
                try:
                    await listener(event)
                except Exception:
                    log.exception("event.listener_failed", event_name=event.name)
        for forwarder in self.forwarders:
            try:
                await forwarder.publish(batch)
            except Exception:
                log.exception("event.forward_failed")


async def record_webhooks(session: AsyncSession, events: Iterable[Event]) -> int:
    """Write the webhook deliveries of ``events`` in the session's transaction (call it
    before the commit of the change the events describe); returns the rows added."""
    return await webhooks.record_events(session, ((e.name, e.data, e.at) for e in events))


@asynccontextmanager
async def changing(
    database: Database, bus: EventBus | None
) -> AsyncIterator[tuple[AsyncSession, list[Event]]]:
    """A write transaction and a list for the events it causes: on success their webhook
    deliveries are written in the transaction, then, once it committed, the events are
    published on ``bus`` (live consoles). An error rolls back both and publishes nothing.
    """
    async with database.transaction() as session:
        events: list[Event] = []
        yield session, events
        await record_webhooks(session, events)
    if events and bus is not None:
        await bus.publish(events)


class RedisEventForwarder:
    """Publishes events on a Redis channel so every web node can push them to consoles."""

    def __init__(self, redis: Any, channel: str = "cc:events") -> None:
        self.redis = redis
        self.channel = channel

    async def publish(self, events: Iterable[Event]) -> None:
        """One PUBLISH per event, pipelined."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(self.channel, event.to_json())
            await pipe.execute()
