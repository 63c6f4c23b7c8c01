"""The bus between channel adapters and the routing engine.

``DatabaseBus`` is the embedded default: a durable table with leases, retries with
exponential backoff and a dead-letter state an admin can see and replay. Acknowledging
inside the transaction that recorded a message's effects makes processing exactly-once.

A worker processes a micro-batch of deliveries in one transaction: it first *pins* the
batch (:meth:`DatabaseBus.pin`: one conditional UPDATE that renews the leases still
held and returns them), which keeps the entries its own until commit — the SQLite write
lock, or the PostgreSQL row locks that claimers skip (``SKIP LOCKED``) — then records
the effects, and acknowledges and fails entries set-based in that same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Database
from crm_core.models import QueueEntry, utcnow

READY = "ready"
DEAD = "dead"
LEASE_EXPIRED = "lease expired on the last attempt (did the worker die?)"


@dataclass(frozen=True)
class Delivery:
    """One claimed entry: its payload and how many times it has been tried."""

    id: int | str
    """The entry's id: a row id on the database bus, a stream id on Redis."""
    topic: str
    key: str
    payload: str
    attempts: int
    worker: str


@dataclass(frozen=True)
class RetryPolicy:
    """How often to retry and how long to wait: base × 2^(attempt-1), capped."""

    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=10)
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempts: int) -> timedelta:
        """The wait before the next try after ``attempts`` failed tries."""
        return min(self.base_delay * (2 ** max(attempts - 1, 0)), self.max_delay)


class Bus(Protocol):
    """What the adapters and the engine need of a bus."""

    async def publish(self, topic: str, key: str, payload: str) -> bool:
        """Queue a payload once per key; ``False`` when the key was already queued."""
        ...

    async def claim(self, topic: str, worker: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` entries for ``worker``."""
        ...

    async def fail(self, delivery: Delivery, error: str) -> bool:
        """Schedule a retry, or dead-letter after the last attempt; ``True`` when dead."""
        ...

    async def ack_many(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge processed entries at once; returns how many were still held."""
        ...

    async def touch_many(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases of entries still being worked on."""
        ...


def _by_worker(deliveries: Sequence[Delivery]) -> dict[str, list[Delivery]]:
    """Deliveries grouped by the worker holding them (a batch has one)."""
    groups: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.worker, []).append(delivery)
    return groups


class DatabaseBus:
    """A durable queue in the contact center's own database (SQLite or PostgreSQL)."""

    def __init__(self, database: Database, policy: RetryPolicy | None = None) -> None:
        self.database = database
        self.policy = policy or RetryPolicy()

    async def publish(self, topic: str, key: str, payload: str) -> bool:
        """Insert the entry unless its key is already queued (ON CONFLICT DO NOTHING)."""
        insert = pg_insert if not self.database.is_sqlite else sqlite_insert
        now = utcnow()
        statement = (
            insert(QueueEntry)
            .values(
                topic=topic, key=key, payload=payload, status=READY, attempts=0,
                available_at=now, created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["topic", "key"])
        )
        async with self.database.transaction() as session:
            result = await session.execute(statement)
        return bool(result.rowcount)

    async def claim(self, topic: str, worker: str, limit: int = 50) -> list[Delivery]:
        """Lease the oldest due entries; expired leases (a dead worker's) are taken over."""
        now = utcnow()
        due = and_(
            QueueEntry.topic == topic,
            QueueEntry.status == READY,
            QueueEntry.available_at <= now,
            or_(QueueEntry.lease_until.is_(None), QueueEntry.lease_until < now),
        )
        async with self.database.transaction() as session:
            await self._bury_exhausted(session, due)
            candidates = select(QueueEntry.id).where(due).order_by(QueueEntry.id).limit(limit)
            if not self.database.is_sqlite:
                candidates = candidates.with_for_update(skip_locked=True)
            rows = await session.execute(
                update(QueueEntry)
                .where(QueueEntry.id.in_(candidates.scalar_subquery()))
                .values(
                    lease_until=now + self.policy.lease,
                    leased_by=worker,
                    attempts=QueueEntry.attempts + 1,
                )
                .returning(
                    QueueEntry.id, QueueEntry.topic, QueueEntry.key, QueueEntry.payload,
                    QueueEntry.attempts,
                )
                .execution_options(synchronize_session=False)
            )
            deliveries = [Delivery(*row, worker=worker) for row in rows]
        return sorted(deliveries, key=lambda d: d.id)

    async def _bury_exhausted(self, session: AsyncSession, due: object) -> None:
        """Dead-letter entries whose lease expired on their last allowed attempt.

        A message that kills its worker every time never reaches ``fail``; this is
        where it stops being retried.
        """
        await session.execute(
            update(QueueEntry)
            .where(
                due,  # type: ignore[arg-type]
                QueueEntry.attempts >= self.policy.max_attempts,
                QueueEntry.lease_until.is_not(None),
            )
            .values(
                status=DEAD,
                lease_until=None,
                last_error=func.coalesce(QueueEntry.last_error, "")
                + LEASE_EXPIRED,
            )
            .execution_options(synchronize_session=False)
        )

    async def touch(self, delivery: Delivery) -> None:
        """Renew the lease of an entry still being worked on."""
        await self.touch_many([delivery])

    async def touch_many(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases of entries still being worked on, one UPDATE per worker."""
        if not deliveries:
            return
        async with self.database.transaction() as session:
            for worker, group in _by_worker(deliveries).items():
                await session.execute(
                    update(QueueEntry)
                    .where(QueueEntry.id.in_([d.id for d in group]),
                           QueueEntry.leased_by == worker)
                    .values(lease_until=utcnow() + self.policy.lease)
                    .execution_options(synchronize_session=False)
                )

    async def pin(self, session: AsyncSession, deliveries: Sequence[Delivery]) -> set[int | str]:
        """Renew the leases still held and return their ids, inside the work transaction.

        Call it first in the transaction that will record the entries' effects: from here
        to the commit nobody can take them over (SQLite: the write lock is held; PostgreSQL:
        the UPDATE's row locks are held, and claimers skip locked rows). An entry missing
        from the answer was taken over by another worker (or is no longer ready) and must
        not be processed in this transaction. The claim's attempt count must match too, so
        a lease that went away and came back to the same worker name is not confused.
        """
        owned: set[int | str] = set()
        for worker, group in _by_worker(deliveries).items():
            rows = await session.execute(
                update(QueueEntry)
                .where(
                    tuple_(QueueEntry.id, QueueEntry.attempts).in_(
                        [(d.id, d.attempts) for d in group]
                    ),
                    QueueEntry.leased_by == worker,
                    QueueEntry.status == READY,
                )
                .values(lease_until=utcnow() + self.policy.lease)
                .returning(QueueEntry.id)
                .execution_options(synchronize_session=False)
            )
            owned.update(rows.scalars())
        return owned

    async def ack(self, delivery: Delivery, session: AsyncSession | None = None) -> bool:
        """Remove a processed entry; pass the session of the work to make both one commit.

        Returns ``False`` when the lease was lost (another worker took the entry over).
        """
        return await self.ack_many([delivery], session) == 1

    async def ack_many(
        self, deliveries: Sequence[Delivery], session: AsyncSession | None = None
    ) -> int:
        """Remove processed entries with one DELETE per worker (a batch has one).

        Pass the session of the work to make effects and acknowledgements one commit.
        Returns how many entries were removed; fewer than given means leases were lost.
        """
        if not deliveries:
            return 0
        if session is None:
            async with self.database.transaction() as own:
                return await self.ack_many(deliveries, own)
        removed = 0
        for worker, group in _by_worker(deliveries).items():
            result = await session.execute(
                delete(QueueEntry)
                .where(QueueEntry.id.in_([d.id for d in group]), QueueEntry.leased_by == worker)
                .execution_options(synchronize_session=False)
            )
            removed += int(result.rowcount or 0)
        return removed

    async def fail(
        self, delivery: Delivery, error: str, session: AsyncSession | None = None
    ) -> bool:
        """Record the error; retry after a backoff or dead-letter after the last attempt.

        Pass a session to record it in that transaction (the engine's batch transaction).
        """
        dead = delivery.attempts >= self.policy.max_attempts
        values: dict[str, object] = {"lease_until": None, "last_error": error[:4000]}
        if dead:
            values["status"] = DEAD
        else:
            values["available_at"] = utcnow() + self.policy.delay(delivery.attempts)
        statement = (
            update(QueueEntry)
            .where(QueueEntry.id == delivery.id, QueueEntry.leased_by == delivery.worker)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if session is not None:
            await session.execute(statement)
            return dead
        async with self.database.transaction() as own:
            await own.execute(statement)
        return dead

    async def dead_letters(self, topic: str | None = None, limit: int = 100) -> list[QueueEntry]:
        """Entries that gave up, newest first, with their last error."""
        async with self.database.sessions() as session:
            query = select(QueueEntry).where(QueueEntry.status == DEAD)
            if topic:
                query = query.where(QueueEntry.topic == topic)
            rows = await session.scalars(query.order_by(QueueEntry.id.desc()).limit(limit))
            return list(rows)

    async def replay(self, entry_id: int) -> bool:
        """Put a dead entry back in the queue with a fresh count of attempts."""
        async with self.database.transaction() as session:
            result = await session.execute(
                update(QueueEntry)
                .where(QueueEntry.id == entry_id, QueueEntry.status == DEAD)
                .values(status=READY, attempts=0, available_at=utcnow(), lease_until=None)
            )
        return bool(result.rowcount)

    async def pending(self, topic: str) -> int:
        """How many entries of a topic are waiting or leased (not dead)."""
        async with self.database.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(QueueEntry)
                .where(QueueEntry.topic == topic, QueueEntry.status == READY)
            )
        return int(count or 0)

