"""Micro-batches: many envelopes in one transaction, each in a savepoint of its own.

On SQLite and PostgreSQL (the ``db`` fixture) with the database bus, and with Redis
Streams. Engines here share a transaction across the whole batch on both databases
(``transaction_size``), so the savepoint paths run on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from crm_core.db import Database
from crm_core.models import (
    Channel,
    Conversation,
    Customer,
    Direction,
    Interaction,
    QueueEntry,
    Team,
    Ticket,
)
from routing.bus import DatabaseBus, Delivery, RetryPolicy
from routing.context import RoutingConfig, RoutingContext
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from routing.events import Event, EventBus
from routing.pipeline import DEFAULT_PIPELINE
from routing.rules import RuleSet

TOPIC = "inbound"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
INBOUND = Interaction.direction == Direction.INBOUND
NO_WAIT = RetryPolicy(max_attempts=2, base_delay=timedelta(0), lease=timedelta(seconds=30))
CONFIG = RoutingConfig(region="CN", rules=RuleSet.default())


def chat(key: str, telegram_id: str = "4242", *, minutes: int = 0) -> InboundMessage:
    """A Telegram message from ``telegram_id`` in its private chat."""
    return InboundMessage(
        channel=Channel.TELEGRAM, idempotency_key=key,
        received_at=NOW + timedelta(minutes=minutes),
        sender=SenderHandles(telegram_id=telegram_id, display_name=f"User {telegram_id}"),
        thread=ThreadHints(chat_id=telegram_id), text="hello",
    )


def mail(key: str, sender: str, message_id: str, **fields: Any) -> InboundMessage:
    """An e-mail from ``sender``."""
    data: dict[str, Any] = {
        "channel": Channel.EMAIL, "idempotency_key": key, "received_at": NOW,
        "sender": SenderHandles(email=sender, display_name=sender.split("@")[0]),
        "thread": ThreadHints(message_id=message_id),
        "subject": "订单查询", "text": "请问发货了吗？",
    }
    data.update(fields)
    return InboundMessage(**data)


def batch_engine(db: Database, bus: Any, **kwargs: Any) -> RoutingEngine:
    """An engine that shares one transaction across a whole batch, on either database
    (and whatever the speed of the machine: no time limit on a transaction)."""
    kwargs.setdefault("transaction_size", 50)
    kwargs.setdefault("batch_seconds", 60.0)
    return RoutingEngine(db, bus, CONFIG, EventBus(), **kwargs)


def exploding_for(*keys: str) -> tuple[tuple[str, Any], ...]:
    """The default pipeline plus a last step that raises for ``keys`` after all effects."""

    async def explode(ctx: RoutingContext) -> None:
        if ctx.envelope.idempotency_key in keys:
            raise RuntimeError("boom")

    return (*DEFAULT_PIPELINE, ("explode", explode))


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def claim_all(engine: RoutingEngine, *envelopes: InboundMessage) -> list[Delivery]:
    for item in envelopes:
        assert await engine.publish(item)
    return list(await engine.bus.claim(TOPIC, "w1", 50))


@pytest.fixture
def bus(db: Database) -> DatabaseBus:
    return DatabaseBus(db, NO_WAIT)


@pytest.fixture
def engine_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What the engine logs, at every level, whatever logging an earlier test configured."""
    import routing.engine as engine_module

    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(engine_module, "log", structlog.get_logger(engine_module.__name__))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


async def test_savepoints_work_with_the_projects_own_begin(db: Database) -> None:
    """``begin_nested`` on the write transactions of ``crm_core.db`` (manual BEGIN on SQLite)."""
    async with db.transaction() as session:
        async with session.begin_nested():
            session.add(Team(name="kept", agents=[]))
        nested = await session.begin_nested()
        session.add(Team(name="rolled back", agents=[]))
        await session.flush()
        await nested.rollback()
        async with session.begin_nested():
            session.add(Team(name="also kept", agents=[]))
    async with db.sessions() as session:
        names = set(await session.scalars(select(Team.name)))
    assert names == {"kept", "also kept"}


async def test_a_failing_envelope_in_the_middle_rolls_back_alone(
    db: Database, bus: DatabaseBus, engine_logs: list[dict[str, Any]]
) -> None:
    engine = batch_engine(db, bus, steps=exploding_for("tg:bad"))
    seen: list[Event] = []

    async def listener(event: Event) -> None:
        seen.append(event)

    engine.events.subscribe("interaction.logged", listener)
    deliveries = await claim_all(
        engine, chat("tg:1", "1"), chat("tg:bad", "2"), chat("tg:3", "3")
    )
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed", "retry", "routed"]
    # The savepoint took care of it: the batch was not retried one envelope at a time.
    assert "routing.batch_failed" not in [entry["event"] for entry in engine_logs]
    processed = [e for e in engine_logs if e["event"] == "routing.processed"]
    assert [(e["message_id"], e["channel"], e["outcome"]) for e in processed] == [
        ("tg:1", "telegram", "routed"), ("tg:3", "telegram", "routed")
    ]
    assert all(e["customer_id"] is not None for e in processed)
    assert "explode: RuntimeError: boom" in outcomes[1].detail
    # Nothing the bad envelope did before its step raised was kept: no customer 2.
    assert await count(db, Interaction, INBOUND) == 2
    assert await count(db, Customer) == 2
    assert await count(db, Conversation) == 2
    async with db.sessions() as session:
        [left] = list(await session.scalars(select(QueueEntry)))
        hits = list(await session.scalars(select(Interaction.meta).where(INBOUND)))
    assert left.key == "tg:bad" and "boom" in (left.last_error or "")
    assert all("identify:new-lead" in meta["rule_hits"] for meta in hits)
    assert len(seen) == 2  # after the commit, in order, nothing for the failed envelope
    assert seen[0].data["interaction_id"] < seen[1].data["interaction_id"]
    # The retry fails again and goes to the dead letters; the worker goes on.
    assert await engine.run_once("w1") == 1
    [dead] = await bus.dead_letters(TOPIC)
    assert dead.key == "tg:bad"
    assert await count(db, QueueEntry, QueueEntry.status == "ready") == 0


async def test_two_messages_of_one_new_customer_in_one_batch(
    db: Database, bus: DatabaseBus
) -> None:
    engine = batch_engine(db, bus)
    first = mail("imap:1", "new.customer@example.cn", "<a1@example.cn>")
    reply = mail(
        "imap:2", "new.customer@example.cn", "<a2@example.cn>", subject="Re: 订单查询",
        thread=ThreadHints(message_id="<a2@example.cn>", in_reply_to="<a1@example.cn>"),
    )
    deliveries = await claim_all(engine, first, reply, chat("tg:1"), chat("tg:2", minutes=5))
    assert len(deliveries) == 4
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed"] * 4
    assert await count(db, Customer) == 2  # one e-mail lead, one Telegram lead
    assert await count(db, Conversation) == 2  # the reply and the 2nd chat message threaded
    assert await count(db, Ticket) == 2
    assert await count(db, Interaction, INBOUND) == 4
    assert await count(db, QueueEntry) == 0


async def test_a_duplicate_of_an_earlier_envelope_in_the_same_batch_is_processed_once(
    db: Database, bus: DatabaseBus
) -> None:
    engine = batch_engine(db, bus)
    item = chat("tg:7")
    # The same envelope under a second bus key (as after a re-import by a channel).
    assert await bus.publish(TOPIC, "tg:7", item.to_json())
    assert await bus.publish(TOPIC, "tg:7:again", item.to_json())
    deliveries = await bus.claim(TOPIC, "w1", 10)
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed", "duplicate"]
    assert await count(db, Interaction, INBOUND) == 1
    assert await count(db, QueueEntry) == 0


@pytest.mark.parametrize("transaction_size", [50, 1], ids=["shared", "alone"])
async def test_a_lost_lease_commits_nothing_of_that_entry(
    db: Database, bus: DatabaseBus, engine_logs: list[dict[str, Any]], transaction_size: int
) -> None:
    """Shared: the pin finds the lost entry first. Alone: its acknowledgement does, and
    the transaction rolls back."""
    engine = batch_engine(db, bus, transaction_size=transaction_size)
    deliveries = await claim_all(engine, chat("tg:1", "1"), chat("tg:2", "2"), chat("tg:3", "3"))
    # Another worker took the middle entry over (its lease had run out).
    async with db.transaction() as session:
        await session.execute(
            update(QueueEntry)
            .where(QueueEntry.id == deliveries[1].id)
            .values(leased_by="w2", attempts=QueueEntry.attempts + 1)
        )
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed", "lost", "routed"]
    # Found by the pin at the start, not by a failed commit.
    events = [entry["event"] for entry in engine_logs]
    assert "routing.batch_failed" not in events and "routing.lease_lost" in events
    async with db.sessions() as session:
        keys = set(await session.scalars(select(Interaction.external_id).where(INBOUND)))
        [left] = list(await session.scalars(select(QueueEntry)))
    assert keys == {"tg:1", "tg:3"}
    assert left.id == deliveries[1].id and left.leased_by == "w2"


async def test_a_malformed_envelope_in_a_batch_is_dead_and_the_others_commit(
    db: Database, bus: DatabaseBus
) -> None:
    engine = batch_engine(db, bus)
    await engine.publish(chat("tg:1", "1"))
    await bus.publish(TOPIC, "junk", '{"channel": "pigeon"}')
    await engine.publish(chat("tg:3", "3"))
    outcomes = await engine.handle_batch(await bus.claim(TOPIC, "w1", 10))
    assert [o.status for o in outcomes] == ["routed", "dead", "routed"]
    [dead] = await bus.dead_letters(TOPIC)
    assert dead.key == "junk" and "malformed envelope" in (dead.last_error or "")
    assert await count(db, Interaction, INBOUND) == 2


async def test_a_transaction_that_cannot_commit_is_retried_one_envelope_at_a_time(
    db: Database, bus: DatabaseBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = batch_engine(db, bus)
    calls: list[int] = []
    original = engine._write_rule_hits

    async def flaky(session: Any, taken: list[Any]) -> None:
        calls.append(len(taken))
        if len(calls) == 1:
            raise ConnectionError("connection reset while writing the batch")
        await original(session, taken)

    monkeypatch.setattr(engine, "_write_rule_hits", flaky)
    deliveries = await claim_all(engine, chat("tg:1", "1"), chat("tg:2", "2"), chat("tg:3", "3"))
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed"] * 3
    assert calls == [3, 1, 1, 1]
    assert await count(db, Interaction, INBOUND) == 3
    assert await count(db, Customer) == 3
    assert await count(db, QueueEntry) == 0


async def test_leases_of_a_long_batch_are_renewed(db: Database) -> None:
    """A batch longer than its lease: the entries still waiting keep valid leases."""
    policy = RetryPolicy(max_attempts=2, base_delay=timedelta(0), lease=timedelta(seconds=2))
    bus = DatabaseBus(db, policy)
    checks: list[bool] = []

    async def slow(ctx: RoutingContext) -> None:
        await asyncio.sleep(0.3)
        now = datetime.now(UTC)
        async with db.sessions() as reader:  # a read never waits for the writer
            leases = list(await reader.scalars(select(QueueEntry.lease_until)))
        checks.append(all(lease is not None and _aware(lease) > now for lease in leases))

    engine = batch_engine(
        db, bus, steps=(("slow", slow), *DEFAULT_PIPELINE), transaction_size=1
    )
    deliveries = await claim_all(engine, *(chat(f"tg:{i}", str(i)) for i in range(8)))
    outcomes = await engine.handle_batch(deliveries)  # about 2.4 s, leases of 2 s
    assert [o.status for o in outcomes] == ["routed"] * 8
    assert checks == [True] * 8


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def test_a_claimer_cannot_take_entries_pinned_by_a_batch(postgres_db: Database) -> None:
    """PostgreSQL: expired leases of a batch in progress are skipped by other claimers."""
    bus = DatabaseBus(postgres_db, NO_WAIT)
    stolen: list[list[Delivery]] = []

    async def claim_meanwhile(ctx: RoutingContext) -> None:
        if ctx.envelope.idempotency_key == "tg:0":
            stolen.append(await bus.claim(TOPIC, "w2", 10))

    engine = batch_engine(postgres_db, bus, steps=(("claim", claim_meanwhile), *DEFAULT_PIPELINE))
    deliveries = await claim_all(engine, *(chat(f"tg:{i}", str(i)) for i in range(3)))
    async with postgres_db.transaction() as session:  # every lease has run out
        await session.execute(
            update(QueueEntry).values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    outcomes = await engine.handle_batch(deliveries)
    assert stolen == [[]]
    assert [o.status for o in outcomes] == ["routed"] * 3
    assert await count(postgres_db, Interaction, INBOUND) == 3


@pytest.fixture
async def redis_bus(redis_client: Any, redis_prefix: str) -> AsyncIterator[Any]:
    from routing.redis_bus import RedisStreamBus

    yield RedisStreamBus(redis_client, NO_WAIT, prefix=redis_prefix)
    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await redis_client.delete(*keys)


async def test_redis_batch_failure_duplicate_and_new_customer_threading(
    db: Database, redis_bus: Any
) -> None:
    engine = batch_engine(db, redis_bus, steps=exploding_for("tg:bad"))
    seen: list[str] = []

    async def listener(event: Event) -> None:
        seen.append(f"{event.name}:{event.data.get('interaction_id', '')}")

    engine.events.subscribe("interaction.logged", listener)
    first = chat("tg:1")
    await engine.publish(first)
    await engine.publish(chat("tg:bad", "99"))
    await engine.publish(chat("tg:2", minutes=1))  # same new customer, same chat
    await redis_bus.publish(TOPIC, "tg:1:again", first.to_json())  # a duplicate in the batch
    deliveries = await redis_bus.claim(TOPIC, "w1", 10)
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed", "retry", "routed", "duplicate"]
    assert await count(db, Customer) == 1
    assert await count(db, Conversation) == 1
    assert await count(db, Interaction, INBOUND) == 2
    assert len(seen) == 2  # published after the commit, nothing for the failed one
    assert await redis_bus.pending(TOPIC) == 1  # only the failed entry is left
    [again] = await redis_bus.claim(TOPIC, "w1", 10)
    assert again.key == "tg:bad" and again.attempts == 2
    assert [o.status for o in await engine.handle_batch([again])] == ["dead"]
    assert await redis_bus.pending(TOPIC) == 0
    # A redelivery of committed work (as after a crash before XACK) changes nothing.
    await redis_bus.publish(TOPIC, "tg:2:redelivered", chat("tg:2", minutes=1).to_json())
    assert await engine.run_once("w1") == 1
    assert await count(db, Interaction, INBOUND) == 2


async def test_redis_leases_of_a_long_batch_are_renewed(db: Database, redis_bus: Any) -> None:
    from routing.redis_bus import RedisStreamBus

    bus = RedisStreamBus(
        redis_bus.redis,
        RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=1)),
        prefix=redis_bus.prefix,
    )
    stolen: list[int] = []

    async def slow(ctx: RoutingContext) -> None:
        await asyncio.sleep(0.25)
        stolen.append(len(await bus.claim(TOPIC, "w2", 10)))

    engine = batch_engine(db, bus, steps=(("slow", slow), *DEFAULT_PIPELINE))
    for i in range(6):
        await engine.publish(chat(f"tg:{i}", str(i)))
    deliveries = await bus.claim(TOPIC, "w1", 10)
    outcomes = await engine.handle_batch(deliveries)  # 1.5 s in one transaction, leases of 1 s
    assert [o.status for o in outcomes] == ["routed"] * 6
    assert stolen == [0] * 6
    assert await bus.pending(TOPIC) == 0


async def test_after_a_rolled_back_envelope_the_next_one_sees_no_stale_state(
    db: Database, bus: DatabaseBus
) -> None:
    """Three messages of one new customer; the middle one fails after all its effects."""
    engine = batch_engine(db, bus, steps=exploding_for("tg:2"))
    deliveries = await claim_all(
        engine, chat("tg:1"), chat("tg:2", minutes=1), chat("tg:3", minutes=2)
    )
    outcomes = await engine.handle_batch(deliveries)
    assert [o.status for o in outcomes] == ["routed", "retry", "routed"]
    async with db.sessions() as session:
        [conversation] = list(await session.scalars(select(Conversation)))
        keys = list(await session.scalars(
            select(Interaction.external_id).where(INBOUND).order_by(Interaction.id)
        ))
    assert keys == ["tg:1", "tg:3"]
    assert _aware(conversation.last_message_at) == NOW + timedelta(minutes=2)
    assert await count(db, Customer) == 1 and await count(db, Ticket) == 1
