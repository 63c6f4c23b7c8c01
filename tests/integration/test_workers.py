"""Two real worker processes share 1,000 envelopes: each lands exactly once, even after
one worker is killed with SIGKILL mid-stream. On SQLite with the database bus, and on
PostgreSQL with Redis Streams."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from crm_core.db import Database
from crm_core.models import Channel, Direction, Interaction, QueueEntry
from routing.bus import DatabaseBus
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from tests.conftest import REDIS_URL

ENVELOPES = 1000
WORKER_REDIS_DB = 14
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def envelopes(count: int) -> list[InboundMessage]:
    """Mixed channels from 150 senders, so customers and conversations are shared."""
    result = []
    for i in range(count):
        sender = i % 150
        at = START + timedelta(seconds=i)
        if i % 3 == 0:
            item = InboundMessage(
                channel=Channel.EMAIL, idempotency_key=f"imap:1:{i}", received_at=at,
                sender=SenderHandles(
                    email=f"user{sender}@example.cn", display_name=f"客户{sender}"
                ),
                thread=ThreadHints(message_id=f"<m{i}@example.cn>"),
                subject=f"订单 {i}", text="请问发货了吗？",
            )
        elif i % 3 == 1:
            item = InboundMessage(
                channel=Channel.TELEGRAM, idempotency_key=f"tg:{i}", received_at=at,
                sender=SenderHandles(telegram_id=str(9000 + sender), display_name=f"User {sender}"),
                thread=ThreadHints(chat_id=str(9000 + sender)), text="hello",
            )
        else:
            item = InboundMessage(
                channel=Channel.PHONE, idempotency_key=f"call:CA{i}:ringing", received_at=at,
                sender=SenderHandles(phone=f"+86 138 0000 {sender:04d}"),
                thread=ThreadHints(call_id=f"CA{i}"),
            )
        result.append(item)
    return result


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "contact_center", "worker"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return await predicate()


async def interaction_stats(db: Database) -> tuple[int, int]:
    async with db.sessions() as session:
        inbound = Interaction.direction == Direction.INBOUND
        total = await session.scalar(select(func.count()).select_from(Interaction).where(inbound))
        distinct = await session.scalar(
            select(func.count(func.distinct(Interaction.external_id))).where(inbound)
        )
    return int(total or 0), int(distinct or 0)


@pytest.fixture
async def worker_redis() -> AsyncIterator[Any]:
    from redis.asyncio import Redis

    from tests.conftest import require_service

    url = REDIS_URL.rsplit("/", 1)[0] + f"/{WORKER_REDIS_DB}"
    client = Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        require_service("Redis", f"{url}: {exc}")
    await client.flushdb()
    client.url = url  # type: ignore[attr-defined]
    yield client
    await client.flushdb()
    await client.aclose()


async def _run(db: Database, redis: Any | None, *, kill_one: bool) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "CC_ROUTING__LEASE_SECONDS": "3",
        "CC_ROUTING__RETRY_BASE_SECONDS": "0.2",
        "CC_ROUTING__MAX_ATTEMPTS": "10",
        "CC_LOG__LEVEL": "WARNING",
        "PYTHONPATH": os.getcwd(),
    }
    env.pop("REDIS_URL", None)
    env.pop("CC_REDIS_URL", None)
    if redis is not None:
        from routing.bus import RetryPolicy
        from routing.redis_bus import RedisStreamBus

        env["REDIS_URL"] = redis.url
        bus: Any = RedisStreamBus(redis, RetryPolicy())
    else:
        bus = DatabaseBus(db)
    items = envelopes(ENVELOPES)
    for item in items:
        await bus.publish("inbound", item.idempotency_key, item.to_json())
    workers = [start_worker(env), start_worker(env)]
    try:
        await asyncio.sleep(1)
        crashed = [p.stderr.read().decode() for p in workers if p.poll() is not None and p.stderr]
        assert not crashed, crashed
        if kill_one:
            assert await wait_for(lambda: _at_least(db, 150), seconds=120)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=10)
        done = await wait_for(lambda: _at_least(db, ENVELOPES), seconds=240)
        errors = b""
        if not done:
            for proc in workers:
                proc.terminate()
            errors = b"".join(p.stderr.read()[-3000:] for p in workers if p.stderr)
        assert done, f"not all envelopes landed: {await interaction_stats(db)}\n{errors!r}"
        await asyncio.sleep(0.5)  # a straggler would show up now
        assert await interaction_stats(db) == (ENVELOPES, ENVELOPES)
        if redis is None:
            async with db.sessions() as session:
                assert await session.scalar(select(func.count()).select_from(QueueEntry)) == 0
        else:
            assert await wait_for(lambda: _stream_empty(bus), seconds=30)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def _at_least(db: Database, n: int) -> bool:
    return (await interaction_stats(db))[0] >= n


async def _stream_empty(bus: Any) -> bool:
    return await bus.pending("inbound") == 0


@pytest.mark.parametrize("kill_one", [False, True], ids=["steady", "kill-9"])
async def test_sqlite_database_bus_two_workers(sqlite_db: Database, kill_one: bool) -> None:
    await _run(sqlite_db, None, kill_one=kill_one)


@pytest.mark.parametrize("kill_one", [False, True], ids=["steady", "kill-9"])
async def test_postgres_redis_two_workers(
    postgres_db: Database, worker_redis: Any, kill_one: bool
) -> None:
    await _run(postgres_db, worker_redis, kill_one=kill_one)
