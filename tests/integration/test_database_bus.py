"""The durable database bus: once per key, leases, retries, dead letters, replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from crm_core.db import Database
from crm_core.models import QueueEntry
from routing.bus import DatabaseBus, RetryPolicy
from routing.envelope import InboundMessage, SenderHandles, ThreadHints

TOPIC = "inbound"
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))


async def _expire_leases(db: Database) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with db.transaction() as session:
        await session.execute(update(QueueEntry).values(lease_until=past))


def test_envelope_round_trips_through_json() -> None:
    envelope = InboundMessage(
        channel="email",
        idempotency_key="imap:1:42",
        received_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        sender=SenderHandles(email="zhang.wei@example.cn", display_name="张伟"),
        thread=ThreadHints(message_id="<a@b>", references=("<x@y>",)),
        subject="发票问题 [T-000123]",
        text="您好，请问发票什么时候开？",
    )
    assert InboundMessage.from_json(envelope.to_json()) == envelope


async def test_publish_is_idempotent_per_key(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    assert await bus.publish(TOPIC, "k1", "{}") is True
    assert await bus.publish(TOPIC, "k1", "{}") is False
    assert await bus.publish("other", "k1", "{}") is True
    assert await bus.pending(TOPIC) == 1


async def test_claim_leases_and_ack_in_the_work_transaction(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    for i in range(5):
        await bus.publish(TOPIC, f"k{i}", f'{{"n": {i}}}')
    first = await bus.claim(TOPIC, "w1", limit=3)
    assert [d.key for d in first] == ["k0", "k1", "k2"]
    assert all(d.attempts == 1 for d in first)
    # Leased entries are not handed to another worker.
    second = await bus.claim(TOPIC, "w2", limit=10)
    assert [d.key for d in second] == ["k3", "k4"]
    async with db.transaction() as session:
        assert await bus.ack(first[0], session) is True
    assert await bus.pending(TOPIC) == 4
    # A rolled-back transaction leaves the entry queued.
    try:
        async with db.transaction() as session:
            await bus.ack(first[1], session)
            raise RuntimeError("work failed after ack")
    except RuntimeError:
        pass
    assert await bus.pending(TOPIC) == 4


async def test_expired_lease_is_taken_over_and_old_worker_cannot_ack(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    await bus.publish(TOPIC, "k", "{}")
    [stale] = await bus.claim(TOPIC, "dead-worker")
    await _expire_leases(db)
    [taken] = await bus.claim(TOPIC, "w2")
    assert taken.id == stale.id and taken.attempts == 2
    assert await bus.ack(stale) is False
    assert await bus.ack(taken) is True
    assert await bus.pending(TOPIC) == 0


async def test_failures_retry_with_backoff_then_dead_letter_and_replay(db: Database) -> None:
    slow = RetryPolicy(max_attempts=2, base_delay=timedelta(hours=1))
    bus = DatabaseBus(db, slow)
    await bus.publish(TOPIC, "poison", "{}")
    [d1] = await bus.claim(TOPIC, "w")
    assert await bus.fail(d1, "boom 1") is False
    assert await bus.claim(TOPIC, "w") == []  # backing off for an hour
    async with db.transaction() as session:
        await session.execute(update(QueueEntry).values(available_at=datetime.now(UTC)))
    [d2] = await bus.claim(TOPIC, "w")
    assert await bus.fail(d2, "boom 2") is True
    [dead] = await bus.dead_letters(TOPIC)
    assert dead.last_error == "boom 2" and dead.attempts == 2
    assert await bus.claim(TOPIC, "w") == []
    assert await bus.replay(dead.id) is True
    [again] = await bus.claim(TOPIC, "w")
    assert again.attempts == 1


async def test_entry_that_kills_its_worker_every_time_is_dead_lettered(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    await bus.publish(TOPIC, "crasher", "{}")
    for _ in range(NO_WAIT.max_attempts):
        assert len(await bus.claim(TOPIC, "w")) == 1
        await _expire_leases(db)
    assert await bus.claim(TOPIC, "w") == []
    [dead] = await bus.dead_letters(TOPIC)
    assert "lease expired" in (dead.last_error or "")


async def test_concurrent_claimers_never_share_an_entry(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    for i in range(60):
        await bus.publish(TOPIC, f"k{i}", "{}")

    async def drain(worker: str) -> list[int]:
        got: list[int] = []
        while batch := await bus.claim(TOPIC, worker, limit=7):
            got.extend(d.id for d in batch)
            for delivery in batch:
                assert await bus.ack(delivery)
        return got

    results = await asyncio.gather(*(drain(f"w{i}") for i in range(3)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == 60 and len(set(claimed)) == 60


async def test_touch_renews_the_lease(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    await bus.publish(TOPIC, "slow", "{}")
    [mine] = await bus.claim(TOPIC, "w1")
    await _expire_leases(db)
    await bus.touch(mine)
    assert await bus.claim(TOPIC, "w2") == []
    assert await bus.ack(mine) is True


async def test_pin_holds_only_entries_still_leased_and_ack_many_is_one_delete(
    db: Database,
) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    for i in range(4):
        await bus.publish(TOPIC, f"k{i}", "{}")
    mine = await bus.claim(TOPIC, "w1", limit=4)
    async with db.transaction() as session:  # k1 was taken over, k2 claimed once more
        await session.execute(
            update(QueueEntry).where(QueueEntry.key == "k1").values(leased_by="w2")
        )
        await session.execute(
            update(QueueEntry).where(QueueEntry.key == "k2")
            .values(attempts=QueueEntry.attempts + 1)
        )
    await _expire_leases(db)
    async with db.transaction() as session:
        owned = await bus.pin(session, mine)
        assert owned == {mine[0].id, mine[3].id}
        assert await bus.ack_many([mine[0], mine[1]], session) == 1  # k1 is not ours
    # k3's lease was renewed by the pin; k1 and k2 (expired, not ours) can be claimed.
    assert {d.key for d in await bus.claim(TOPIC, "w3", limit=10)} == {"k1", "k2"}


async def test_touch_many_renews_a_whole_batch(db: Database) -> None:
    bus = DatabaseBus(db, NO_WAIT)
    for i in range(3):
        await bus.publish(TOPIC, f"k{i}", "{}")
    batch = await bus.claim(TOPIC, "w1", limit=3)
    await _expire_leases(db)
    await bus.touch_many(batch)
    assert await bus.claim(TOPIC, "w2", limit=10) == []
    assert await bus.ack_many(batch) == 3
