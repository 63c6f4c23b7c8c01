"""The routing engine: claims envelopes from the bus and runs the pipeline over each.

All database effects of one envelope happen in one transaction. On the database bus
the acknowledgement is part of that transaction (exactly-once); on Redis it follows
the commit, and a redelivery is stopped by the dedupe step. A step that raises sends
the envelope to retry and, after the last attempt, to the dead letters; the worker
keeps running. Events are published only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from crm_core.db import Database
from routing.bus import DatabaseBus, Delivery
from routing.context import RoutingConfig, RoutingContext, StopProcessing
from routing.envelope import InboundMessage
from routing.events import EventBus
from routing.pipeline import DEFAULT_PIPELINE, Step

log = structlog.get_logger(__name__)
INBOUND_TOPIC = "inbound"


class LeaseLost(Exception):
    """Another worker took the entry over while this one was still working on it."""


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery."""

    status: str
    """``routed``, ``duplicate``, ``retry``, ``dead`` or ``lost``."""
    detail: str = ""


class RoutingEngine:
    """Runs the pipeline over envelopes from a bus."""

    def __init__(
        self,
        database: Database,
        bus: Any,
        config: RoutingConfig,
        events: EventBus | None = None,
        *,
        steps: tuple[tuple[str, Step], ...] = DEFAULT_PIPELINE,
        topic: str = INBOUND_TOPIC,
    ) -> None:
        self.database = database
        self.bus = bus
        self.config = config
        self.events = events or EventBus()
        self.steps = steps
        self.topic = topic
        self.ack_in_transaction = isinstance(bus, DatabaseBus)

    async def publish(self, envelope: InboundMessage) -> bool:
        """Hand an envelope to the bus (what channel adapters call)."""
        key = envelope.idempotency_key
        return bool(await self.bus.publish(self.topic, key, envelope.to_json()))

    async def handle(self, delivery: Delivery) -> Outcome:
        """Process one delivery to its end: routed, duplicate, retried or dead."""
        bound = log.bind(message_id=delivery.key, attempt=delivery.attempts)
        try:
            envelope = InboundMessage.from_json(delivery.payload)
        except pydantic.ValidationError as exc:
            # Retrying cannot fix a malformed envelope: straight to the dead letters.
            await self._give_up(delivery, f"malformed envelope: {exc}")
            bound.error("routing.malformed_envelope")
            return Outcome("dead", "malformed envelope")
        bound = bound.bind(channel=envelope.channel.value)
        started = time.perf_counter()
        ctx: RoutingContext | None = None
        step_name = "begin"
        try:
            async with self.database.transaction() as session:
                ctx = RoutingContext(envelope=envelope, session=session, config=self.config)
                try:
                    for name, step in self.steps:
                        step_name = name
                        await step(ctx)
                    if ctx.interaction is not None:
                        ctx.interaction.meta = {**ctx.interaction.meta, "rule_hits": ctx.hits}
                    outcome = Outcome("routed")
                except StopProcessing as stop:
                    outcome = Outcome("duplicate", stop.reason)
                    ctx.events.clear()
                if self.ack_in_transaction and not await self.bus.ack(delivery, session):
                    raise LeaseLost(delivery.key)
        except LeaseLost:
            bound.warning("routing.lease_lost")
            return Outcome("lost")
        except Exception as exc:
            error = f"{step_name}: {type(exc).__name__}: {exc}"
            dead = await self.bus.fail(delivery, error)
            bound.error("routing.step_failed", step=step_name, error=error, dead=dead,
                        exc_info=not dead)
            return Outcome("dead" if dead else "retry", error)
        if not self.ack_in_transaction:
            await self.bus.ack(delivery)
        customer_id = ctx.customer.id if ctx and ctx.customer else None
        bound.info(
            "routing.processed",
            outcome=outcome.status,
            customer_id=customer_id,
            ticket=ctx.ticket.number if ctx and ctx.ticket else None,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if ctx is not None and ctx.events:
            await self.events.publish(ctx.events)
        return outcome

    async def _give_up(self, delivery: Delivery, error: str) -> None:
        """Dead-letter at once, whatever the attempt count."""
        exhausted = Delivery(
            delivery.id, delivery.topic, delivery.key, delivery.payload,
            max(delivery.attempts, self.bus.policy.max_attempts), delivery.worker,
        )
        await self.bus.fail(exhausted, error)

    async def run_once(self, worker: str, limit: int = 50) -> int:
        """Claim and process one batch; returns how many deliveries it held.

        Leases run from the claim, so entries still waiting in the batch are renewed
        once half the lease has passed; no other worker takes over live work.
        """
        deliveries = await self.bus.claim(self.topic, worker, limit)
        renew_after = self.bus.policy.lease.total_seconds() / 2
        renewed_at = time.monotonic()
        for delivery in deliveries:
            if time.monotonic() - renewed_at > renew_after:
                for waiting in deliveries[deliveries.index(delivery) :]:
                    await self.bus.touch(waiting)
                renewed_at = time.monotonic()
            await self.handle(delivery)
        return len(deliveries)

    async def run(self, worker: str, stop: asyncio.Event, *, idle_wait: float = 0.2) -> None:
        """Consume until ``stop`` is set, waiting briefly whenever the bus is empty."""
        log.info("routing.worker_started", worker=worker, topic=self.topic)
        while not stop.is_set():
            try:
                handled = await self.run_once(worker)
            except Exception:
                log.exception("routing.claim_failed", worker=worker)
                handled = 0
            if not handled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_wait)
        log.info("routing.worker_stopped", worker=worker)
