"""The routing engine: claims micro-batches from the bus and runs the pipeline over them.

Envelopes of a batch share a transaction, one after the other through the same steps,
so a later envelope sees what an earlier one created (the new customer, the conversation
to thread onto, the interaction that makes it a duplicate). Each envelope of a shared
transaction runs inside a SAVEPOINT: when a step raises, only that envelope's effects
are rolled back and it goes to retry (after the last attempt, to the dead letters) while
the others commit. On the database bus the entries are first pinned (their leases renewed
and held to the commit) and acknowledged in the same transaction as their effects
(exactly-once); on Redis acknowledgements follow the commit and a redelivery is stopped
by the dedupe step. Events are published only after the commit, in order.

How many envelopes share a transaction (``transaction_size``) defaults to the whole
batch on SQLite, which has one writer at a time anyway, and to one on PostgreSQL: there
the assignment step's locks (a team row, or an advisory lock without a team) last until
commit, so a many-envelope transaction would make the other workers wait for all of it.
When several envelopes do share a PostgreSQL transaction, the batch first takes a routing
lock, so that two workers' batches can never deadlock on each other's rows.

A transaction that cannot commit as a whole (a broken connection, a constraint checked at
commit) is retried one envelope per transaction, so one bad envelope never holds up the
others. A transaction also closes after ``batch_seconds`` (0.1 s): it bounds how long the
SQLite write lock is held, which every other writer (a webhook recording a message, an
agent's reply) waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
import structlog
from sqlalchemy import bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Database
from crm_core.models import Interaction
from routing import metrics
from routing.bus import DatabaseBus, Delivery
from routing.context import RoutingConfig, RoutingContext, StopProcessing
from routing.envelope import InboundMessage
from routing.events import Event, EventBus, record_webhooks
from routing.pipeline import DEFAULT_PIPELINE, Step

log = structlog.get_logger(__name__)
INBOUND_TOPIC = "inbound"
DEFAULT_BATCH_SIZE = 50
DEFAULT_BATCH_SECONDS = 0.1
BATCH_LOCK_KEY = 0x63635F726F757465  # "cc_route": one many-envelope batch at a time (PG)
DONE = ("routed", "duplicate")
"""Outcomes whose delivery is acknowledged."""

_INTERACTIONS = Interaction.__table__
_SET_RULE_HITS = (
    update(_INTERACTIONS)
    .where(_INTERACTIONS.c.id == bindparam("interaction_id"))
    .values(meta=bindparam("interaction_meta", type_=_INTERACTIONS.c.meta.type))
)


OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
"""Connection failures, and a server shutting down or starting up (PostgreSQL)."""
MAX_OUTAGE_WAIT = 120.0
"""How long a batch waits for its database to come back before it is given up (its
entries are then redelivered after their lease)."""


def is_outage(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached (nothing to do with the
    envelope): a broken or refused connection, a server shutting down or starting up."""
    from sqlalchemy.exc import DBAPIError, InterfaceError

    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError | ConnectionError | InterfaceError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and state.startswith(OUTAGE_SQLSTATES):
            return True
        # the driver's error (``orig``) and what caused or preceded this one
        for linked in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                stack.append(linked)
    return False


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than a batch waits for it."""


class LeaseLost(Exception):
    """Another worker took the entry over while this one was still working on it."""


class _EnvelopeFailed(Exception):
    """A step of a one-envelope transaction raised: the transaction is rolled back."""

    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"{step}: {type(error).__name__}: {error}")
        self.step = step
        self.error = error


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery."""

    status: str
    """``routed``, ``duplicate``, ``retry``, ``dead`` or ``lost``."""
    detail: str = ""


@dataclass
class _Item:
    """One delivery on its way through a batch, and what to report once it committed."""

    delivery: Delivery
    envelope: InboundMessage | None
    outcome: Outcome | None = None
    error: str | None = None
    """Why the envelope failed (retry or dead letter once settled)."""
    give_up: bool = False
    """Dead-letter at once, whatever the attempt count (a malformed envelope)."""
    step: str = ""
    exc: BaseException | None = None
    events: list[Event] = field(default_factory=list)
    rule_hits: tuple[int, dict[str, Any]] | None = None
    """The interaction's id and its meta with the rule hits, written with the batch."""
    customer_id: int | None = None
    ticket: str | None = None
    ms: float = 0.0

    @property
    def unsettled_failure(self) -> bool:
        """Failed, and the retry or dead letter is not recorded yet."""
        return self.error is not None and self.outcome is None

    def fail(self, step: str, error: str, exc: BaseException | None = None) -> None:
        """Mark the envelope failed; its retry or dead letter is recorded with the batch."""
        self.outcome, self.step, self.error, self.exc = None, step, error, exc
        self.events, self.rule_hits = [], None

    def reset(self) -> None:
        """Forget the results of a transaction that did not commit."""
        if not self.give_up:
            self.error, self.exc, self.step = None, None, ""
        self.outcome, self.events, self.rule_hits = None, [], None
        self.customer_id, self.ticket = None, None

    def failed_delivery(self, max_attempts: int) -> Delivery:
        """The delivery to record the failure for (counted as exhausted when giving up)."""
        if not self.give_up:
            return self.delivery
        return dataclasses.replace(
            self.delivery, attempts=max(self.delivery.attempts, max_attempts)
        )


@dataclass
class _LeaseClock:
    """When the leases of a batch were last renewed."""

    renewed_at: float = field(default_factory=time.monotonic)

    def due(self, after: float) -> bool:
        """Whether more than ``after`` seconds passed since the last renewal."""
        return time.monotonic() - self.renewed_at > after


class RoutingEngine:
    """Runs the pipeline over micro-batches of envelopes from a bus."""

    def __init__(
        self,
        database: Database,
        bus: Any,
        config: RoutingConfig,
        events: EventBus | None = None,
        *,
        steps: tuple[tuple[str, Step], ...] = DEFAULT_PIPELINE,
        topic: str = INBOUND_TOPIC,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transaction_size: int | None = None,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
    ) -> None:
        if batch_size < 1 or (transaction_size is not None and transaction_size < 1):
            raise ValueError("batch_size and transaction_size must be at least 1")
        self.database = database
        self.bus = bus
        self.config = config
        self.events = events or EventBus()
        self.steps = steps
        self.topic = topic
        self.batch_size = batch_size
        """How many deliveries one claim takes."""
        self.transaction_size = transaction_size or (batch_size if database.is_sqlite else 1)
        """How many envelopes at most share a transaction (see the module's docstring)."""
        self.batch_seconds = batch_seconds
        """After this long a transaction commits and the rest of the batch takes a new one."""
        self.ack_in_transaction = isinstance(bus, DatabaseBus)

    async def publish(self, envelope: InboundMessage) -> bool:
        """Hand an envelope to the bus (what channel adapters call)."""
        key = envelope.idempotency_key
        added = bool(await self.bus.publish(self.topic, key, envelope.to_json()))
        if added:
            metrics.MESSAGES_PUBLISHED.labels(envelope.channel.value).inc()
        return added

    async def handle(self, delivery: Delivery) -> Outcome:
        """Process one delivery to its end: routed, duplicate, retried, dead or lost."""
        [outcome] = await self.handle_batch([delivery])
        return outcome

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Process claimed deliveries in as few transactions as allowed; outcomes in order.

        Every delivery ends routed, duplicate (both acknowledged), retry, dead, or lost
        (another worker holds it now; nothing of it was committed here).
        """
        items = [self._parse(delivery) for delivery in deliveries]
        clock = _LeaseClock()
        todo = items
        while todo:
            todo = todo[await self._commit(todo[: self.transaction_size], todo, clock) :]
        return [item.outcome or Outcome("lost") for item in items]

    def _parse(self, delivery: Delivery) -> _Item:
        try:
            return _Item(delivery, InboundMessage.from_json(delivery.payload))
        except pydantic.ValidationError as exc:
            # Retrying cannot fix a malformed envelope: straight to the dead letters.
            item = _Item(delivery, None, give_up=True)
            item.fail("parse", f"malformed envelope: {exc}")
            return item

    @property
    def _half_lease(self) -> float:
        return float(self.bus.policy.lease.total_seconds()) / 2

    async def _commit(self, chunk: list[_Item], todo: list[_Item], clock: _LeaseClock) -> int:
        """Process a head of ``chunk`` in one transaction; returns how many were settled.

        ``todo`` is the rest of the batch, whose leases are renewed along the way.
        """
        try:
            taken = await self._transaction(chunk, todo, clock)
        except Exception as exc:
            for item in chunk:
                item.reset()
            if is_outage(exc) and await self._database_down():
                # Not the envelopes' fault: wait for the database and try them again,
                # without spending their attempts.
                await self._wait_for_database(todo, clock, exc)
                return 0
            if len(chunk) == 1:
                return await self._fail_alone(chunk[0], exc)
            log.warning(
                "routing.batch_failed", size=len(chunk), error=f"{type(exc).__name__}: {exc}"
            )
            for index, item in enumerate(chunk):  # find the culprit: one per transaction
                await self._commit([item], todo[index:], clock)
            return len(chunk)
        await self._after_commit(taken)
        return len(taken)

    async def _transaction(
        self, chunk: list[_Item], todo: list[_Item], clock: _LeaseClock
    ) -> list[_Item]:
        """Route a head of ``chunk`` in one transaction; on the database bus, settle it there."""
        started = time.monotonic()
        shared = len(chunk) > 1
        taken: list[_Item] = []
        async with self.database.transaction() as session:
            if shared and not self.database.is_sqlite:
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": BATCH_LOCK_KEY}
                )
            # The rest of the batch has its leases renewed too once half a lease has passed.
            renew = clock.due(self._half_lease)
            pinned_at = time.monotonic()
            owned = await self._pin(session, todo if renew else chunk, shared or renew)
            for item in chunk:
                if taken and time.monotonic() - started > self.batch_seconds:
                    break
                taken.append(item)
                if owned is not None and item.delivery.id not in owned:
                    item.outcome = Outcome("lost")
                    continue
                if item.envelope is None:
                    continue
                if not self.ack_in_transaction and clock.due(self._half_lease):
                    # Done but not yet committed (so not acknowledged) counts as in flight.
                    await self.bus.touch_many([i.delivery for i in todo])
                    clock.renewed_at = time.monotonic()
                await self._route(session, item, item.envelope, savepoint=shared)
                session.expunge_all()  # the next envelope starts as in a fresh session
            await self._write_rule_hits(session, taken)
            await record_webhooks(session, [e for item in taken for e in item.events])
            if self.ack_in_transaction:
                await self._settle_in_transaction(session, taken)
        if renew and self.ack_in_transaction:
            clock.renewed_at = pinned_at
        log.debug("routing.transaction_committed", size=len(taken),
                  ms=round((time.monotonic() - started) * 1000, 1))
        return taken

    async def _pin(
        self, session: AsyncSession, items: list[_Item], needed: bool
    ) -> set[int | str] | None:
        """On the database bus, hold these entries' leases to the commit and return the ids
        still held; ``None`` on Redis, or when not ``needed``: a one-envelope transaction
        learns of a lost lease from its acknowledgement, and rolls back."""
        if not (self.ack_in_transaction and needed):
            return None
        owned: set[int | str] = await self.bus.pin(session, [i.delivery for i in items])
        return owned

    async def _route(
        self, session: AsyncSession, item: _Item, envelope: InboundMessage, *, savepoint: bool
    ) -> None:
        """Run the steps over one envelope, inside a savepoint when others share the
        transaction; without one, a failure aborts the (one-envelope) transaction."""
        started = time.perf_counter()
        ctx = RoutingContext(envelope=envelope, session=session, config=self.config)
        step_name = "begin"
        nested = await session.begin_nested() if savepoint else None
        try:
            try:
                for name, step in self.steps:
                    step_name = name
                    await step(ctx)
                outcome = Outcome("routed")
            except StopProcessing as stop:
                outcome = Outcome("duplicate", stop.reason)
                ctx.events.clear()
            step_name = "flush"
            if nested is not None:
                await nested.commit()
            else:
                await session.flush()
        except Exception as exc:
            if nested is None:
                raise _EnvelopeFailed(step_name, exc) from exc
            # Only this envelope's effects go; a failing rollback aborts the whole batch.
            await nested.rollback()
            item.fail(step_name, f"{step_name}: {type(exc).__name__}: {exc}", exc)
        else:
            item.outcome = outcome
            item.events = ctx.events
            if ctx.interaction is not None and outcome.status == "routed":
                meta = {**ctx.interaction.meta, "rule_hits": ctx.hits}
                item.rule_hits = (ctx.interaction.id, meta)
            item.customer_id = ctx.customer.id if ctx.customer is not None else None
            item.ticket = ctx.ticket.number if ctx.ticket is not None else None
        item.ms = round((time.perf_counter() - started) * 1000, 2)

    async def _write_rule_hits(self, session: AsyncSession, taken: list[_Item]) -> None:
        """Keep each interaction's rule hits on it: one UPDATE for the whole transaction."""
        rows = [
            {"interaction_id": item.rule_hits[0], "interaction_meta": item.rule_hits[1]}
            for item in taken
            if item.rule_hits is not None
        ]
        if rows:
            connection = await session.connection()
            await connection.execute(_SET_RULE_HITS, rows)

    async def _settle_in_transaction(self, session: AsyncSession, taken: list[_Item]) -> None:
        """Acknowledge and fail the transaction's entries in it (database bus)."""
        done = [i.delivery for i in taken if i.outcome is not None and i.outcome.status in DONE]
        removed = await self.bus.ack_many(done, session)
        if removed != len(done):  # cannot happen while pinned; never commit on a doubt
            raise LeaseLost(f"{len(done) - removed} of {len(done)} entries")
        max_attempts = self.bus.policy.max_attempts
        for item in taken:
            if item.unsettled_failure:
                error = item.error or ""
                dead = await self.bus.fail(item.failed_delivery(max_attempts), error, session)
                item.outcome = Outcome("dead" if dead else "retry", error)

    async def _after_commit(self, taken: list[_Item]) -> None:
        """Acknowledge and fail on Redis, log each envelope, then publish the events."""
        if not self.ack_in_transaction:
            done = [i.delivery for i in taken if i.outcome and i.outcome.status in DONE]
            try:
                if done:
                    await self.bus.ack_many(done)
            except Exception:
                # Committed: a redelivery is stopped by the dedupe step.
                log.exception("routing.ack_failed", count=len(done))
            max_attempts = self.bus.policy.max_attempts
            for item in taken:
                if item.unsettled_failure:
                    error = item.error or ""
                    dead = await self.bus.fail(item.failed_delivery(max_attempts), error)
                    item.outcome = Outcome("dead" if dead else "retry", error)
        for item in taken:
            self._log(item)
        events = [event for item in taken for event in item.events]
        if events:
            await self.events.publish(events)

    async def _database_down(self) -> bool:
        """Whether the database cannot be reached right now (a connection error that a
        step raised while the database answers is the step's failure, retried as such)."""
        try:
            async with asyncio.timeout(10), self.database.sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            return is_outage(exc) or isinstance(exc, TimeoutError)
        return False

    async def _wait_for_database(
        self, todo: list[_Item], clock: _LeaseClock, exc: Exception
    ) -> None:
        """Wait until the database answers again, keeping the batch's leases on Redis."""
        log.warning("routing.database_unavailable", error=f"{type(exc).__name__}: {exc}",
                    waiting=len(todo))
        metrics.ERRORS.labels("database").inc()
        started = time.monotonic()
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            if not self.ack_in_transaction and clock.due(self._half_lease / 2):
                with contextlib.suppress(Exception):
                    await self.bus.touch_many([item.delivery for item in todo])
                    clock.renewed_at = time.monotonic()
            try:
                async with self.database.sessions() as session:
                    await session.execute(text("SELECT 1"))
            except Exception as again:
                if not is_outage(again):
                    return
                if time.monotonic() - started > MAX_OUTAGE_WAIT:
                    raise DatabaseUnavailable(str(again)) from again
                continue
            log.warning("routing.database_back", seconds=round(time.monotonic() - started, 1))
            return

    async def _fail_alone(self, item: _Item, exc: Exception) -> int:
        """A one-envelope transaction that failed: retry or dead-letter the envelope."""
        if isinstance(exc, LeaseLost):
            item.outcome = Outcome("lost")
        else:
            if isinstance(exc, _EnvelopeFailed):
                item.fail(exc.step, str(exc), exc.error)
            elif item.error is None:
                item.fail("commit", f"commit: {type(exc).__name__}: {exc}", exc)
            max_attempts = self.bus.policy.max_attempts
            dead = await self.bus.fail(item.failed_delivery(max_attempts), item.error or "")
            item.outcome = Outcome("dead" if dead else "retry", item.error or "")
        self._log(item)
        return 1

    def _log(self, item: _Item) -> None:
        """One line per envelope: processed, lease lost, malformed or failed."""
        delivery, outcome = item.delivery, item.outcome or Outcome("lost")
        bound = log.bind(message_id=delivery.key, attempt=delivery.attempts)
        channel = "unknown"
        if item.envelope is not None:
            channel = item.envelope.channel.value
            bound = bound.bind(channel=channel)
        metrics.MESSAGES_IN.labels(channel, outcome.status).inc()
        if outcome.status in DONE:
            metrics.PROCESSING_SECONDS.labels(channel).observe(item.ms / 1000)
        elif outcome.status != "lost":
            metrics.ERRORS.labels("routing").inc()
        if outcome.status in DONE:
            bound.info("routing.processed", outcome=outcome.status, customer_id=item.customer_id,
                       ticket=item.ticket, ms=item.ms)
        elif outcome.status == "lost":
            bound.warning("routing.lease_lost")
        elif item.envelope is None:
            bound.error("routing.malformed_envelope", error=item.error)
        else:
            dead = outcome.status == "dead"
            bound.error("routing.step_failed", step=item.step, error=item.error, dead=dead,
                        exc_info=item.exc if item.exc is not None and not dead else False)

    async def run_once(self, worker: str, limit: int | None = None) -> int:
        """Claim and process one batch; returns how many deliveries it held."""
        deliveries = await self.bus.claim(self.topic, worker, limit or self.batch_size)
        if deliveries:
            await self.handle_batch(deliveries)
        return len(deliveries)

    async def run(self, worker: str, stop: asyncio.Event, *, idle_wait: float = 0.2) -> None:
        """Consume until ``stop`` is set, waiting briefly whenever the bus is empty."""
        log.info("routing.worker_started", worker=worker, topic=self.topic,
                 batch_size=self.batch_size, transaction_size=self.transaction_size)
        while not stop.is_set():
            try:
                handled = await self.run_once(worker)
            except Exception:
                metrics.ERRORS.labels("routing").inc()
                log.exception("routing.batch_aborted", worker=worker)
                handled = 0
            if not handled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_wait)
        log.info("routing.worker_stopped", worker=worker)
