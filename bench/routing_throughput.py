"""Benchmark: route 20,000 envelopes of mixed channels against 100,000 customers.

Embedded: SQLite with the database bus, the engine in this process. Scale-out:
PostgreSQL with Redis Streams and two ``contact-center worker`` processes. Latency is
enqueue → committed at half the measured throughput. The ceiling is the same
interaction rows written by a bare bulk insert into the same SQLite file.

    python bench/routing_throughput.py                                  # full size
    python bench/routing_throughput.py --customers 5000 --envelopes 1000
    python bench/routing_throughput.py --profile                        # cProfile, embedded
    python bench/routing_throughput.py --batch-size 1                   # no micro-batching

Both stacks claim micro-batches of ``--batch-size`` envelopes (the workers get it as
``CC_ROUTING__BATCH_SIZE``). On SQLite a batch shares one transaction (split after the
engine's ``batch_seconds``); on PostgreSQL the engine's default is one envelope per
transaction (see ``routing.engine``). Both sizes are recorded in the results. Latency
counts a message as committed when its whole claimed batch is done.

Targets: ≥ 2,000 messages/s embedded, ≥ 4,000 scale-out, ratio to ceiling ≥ 0.25.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import PROJECT_ROOT, environment, peak_rss_mb, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import import_customers as seed
import structlog
from sqlalchemy import func, insert, select, text

from crm_core.db import Database
from crm_core.models import Channel, Direction, Interaction
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import DEFAULT_BATCH_SIZE, RoutingEngine
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from routing.rules import RuleSet

POSTGRES_ADMIN_URL = os.environ.get(
    "CC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
TARGETS = {"embedded": 2000.0, "scaleout": 4000.0, "ratio": 0.25}
START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def known_handles(count: int) -> list[tuple[str, str, str]]:
    """(name, phone, email) of the seeded customers, from the same generator."""
    header = seed.HEADER
    name_i, phone_i, email_i = header.index("姓名"), header.index("手机"), header.index("邮箱")
    return [(r[name_i], r[phone_i], r[email_i]) for r in seed.rows(count)]


def make_envelopes(handles: list[tuple[str, str, str]], count: int, seed_: int = 7,
                   prefix: str = "m") -> list[InboundMessage]:
    """80 % from known customers (e-mail, phone, web chat), 20 % new Telegram users."""
    rng = random.Random(seed_)
    result = []
    for i in range(count):
        at = START + timedelta(milliseconds=i)
        roll = rng.random()
        name, phone, email = handles[rng.randrange(len(handles))]
        key = f"{prefix}:{i}"
        if roll < 0.35:
            item = InboundMessage(
                channel=Channel.EMAIL, idempotency_key=key, received_at=at,
                sender=SenderHandles(email=email, display_name=name),
                thread=ThreadHints(message_id=f"<{key}@bench>"),
                subject="订单查询 order status", text="请问我的订单什么时候发货？",
            )
        elif roll < 0.6:
            item = InboundMessage(
                channel=Channel.PHONE, idempotency_key=key, received_at=at,
                sender=SenderHandles(phone=phone), thread=ThreadHints(call_id=key),
            )
        elif roll < 0.8:
            item = InboundMessage(
                channel=Channel.WEBCHAT, idempotency_key=key, received_at=at,
                sender=SenderHandles(email=email, visitor_id=f"v-{email}", display_name=name),
                thread=ThreadHints(chat_id=f"v-{email}"), text="你好，想咨询一下价格",
            )
        else:
            tg = f"{prefix}{i}"
            item = InboundMessage(
                channel=Channel.TELEGRAM, idempotency_key=key, received_at=at,
                sender=SenderHandles(telegram_id=tg, display_name=f"Visitor {tg}"),
                thread=ThreadHints(chat_id=tg), text="hello, is anyone there?",
            )
        result.append(item)
    return result


async def seed_database(url: str, csv_path: Path) -> None:
    """Migrate, add the tiers and categories the CSV uses, and import it."""
    from crm_core.services.csv_import import import_customers

    await seed._prepare(url)
    database = Database(url)
    try:
        report = await import_customers(database, csv_path, actor="bench", region="CN")
        if report.counts().get("failed"):
            raise SystemExit(f"seeding failed: {report.counts()}")
    finally:
        await database.dispose()


def new_engine(database: Database, batch_size: int = DEFAULT_BATCH_SIZE) -> RoutingEngine:
    """The engine on the database bus, as the embedded mode builds it."""
    return RoutingEngine(
        database, DatabaseBus(database), RoutingConfig(region="CN", rules=RuleSet.default()),
        batch_size=batch_size,
    )


async def drain(engine: RoutingEngine, done_at: dict[str, float] | None = None) -> int:
    """Claim and route batches until the bus is empty; note when each one committed."""
    handled = 0
    while True:
        deliveries = await engine.bus.claim(engine.topic, "bench", engine.batch_size)
        if not deliveries:
            return handled
        await engine.handle_batch(deliveries)
        if done_at is not None:
            now = time.perf_counter()
            for delivery in deliveries:
                done_at[delivery.key] = now
        handled += len(deliveries)


async def embedded(url: str, items: list[InboundMessage], paced: list[InboundMessage],
                   profile: bool, batch_size: int) -> dict[str, float]:
    database = Database(url)
    engine = new_engine(database, batch_size)
    try:
        for item in items:
            await engine.publish(item)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        handled = await drain(engine)
        seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        throughput = rate(handled, seconds)
        latencies = await paced_latency(engine, paced, throughput / 2)
        ceiling = await ceiling_rows_per_s(database, len(items))
    finally:
        await database.dispose()
    latencies.sort()
    return {
        "embedded_transaction_size": engine.transaction_size,
        "embedded_messages_per_s": throughput,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "ceiling_rows_per_s": ceiling,
        "ratio_to_ceiling": round(throughput / ceiling, 3) if ceiling else 0.0,
    }


async def paced_latency(engine: RoutingEngine, items: list[InboundMessage],
                        per_second: float) -> list[float]:
    """Publish at a steady rate while the engine consumes; enqueue → commit per message."""
    published: dict[str, float] = {}
    done: dict[str, float] = {}
    interval = 1.0 / max(per_second, 1.0)

    async def publisher() -> None:
        for item in items:
            published[item.idempotency_key] = time.perf_counter()
            await engine.publish(item)
            await asyncio.sleep(interval)

    async def consumer() -> None:
        while len(done) < len(items):
            if not await drain(engine, done):
                await asyncio.sleep(0.002)

    await asyncio.gather(publisher(), consumer())
    return [done[k] - published[k] for k in published]


async def ceiling_rows_per_s(database: Database, count: int) -> float:
    """The same interaction rows by a bare bulk insert, 1,000 a transaction."""
    async with database.sessions() as session:
        customer_id = await session.scalar(text("SELECT min(id) FROM customers"))
    now = datetime.now(UTC)
    rows = [
        {
            "customer_id": customer_id, "channel": Channel.EMAIL, "direction": Direction.INBOUND,
            "text": "请问我的订单什么时候发货？", "external_id": f"ceiling:{i}",
            "message_ref": f"<ceiling{i}@bench>", "attachments": [], "meta": {},
            "occurred_at": now, "created_at": now,
        }
        for i in range(count)
    ]
    started = time.perf_counter()
    for offset in range(0, count, 1000):
        async with database.transaction() as session:
            await session.execute(insert(Interaction), rows[offset : offset + 1000])
    return rate(count, time.perf_counter() - started)


async def _admin(statement: str) -> None:
    from crm_core.db import create_engine

    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def inbound_count(database: Database) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(
            select(func.count()).select_from(Interaction)
            .where(Interaction.direction == Direction.INBOUND)
        ) or 0)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A ``contact-center worker`` process."""
    return subprocess.Popen(
        [sys.executable, "-m", "contact_center", "worker"], env=env, cwd=PROJECT_ROOT
    )


async def scaleout(csv_path: Path, items: list[InboundMessage],
                   batch_size: int) -> dict[str, float]:
    from redis.asyncio import Redis

    from routing.redis_bus import RedisStreamBus

    name = f"cc_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    redis = Redis.from_url(REDIS_URL)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await seed_database(url, csv_path)
        await redis.flushdb()
        bus = RedisStreamBus(redis)
        for item in items:
            await bus.publish("inbound", item.idempotency_key, item.to_json())
        database = Database(url)
        before = await inbound_count(database)
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL,
               "CC_LOG__LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT),
               "CC_ROUTING__BATCH_SIZE": str(batch_size)}
        started = time.perf_counter()
        workers = [start_worker(env) for _ in range(2)]
        target = before + len(items)
        deadline = started + 3600
        while time.perf_counter() < deadline:
            if await inbound_count(database) >= target:
                break
            await asyncio.sleep(0.5)
        seconds = time.perf_counter() - started
        landed = await inbound_count(database) - before
        await database.dispose()
        return {"scaleout_messages_per_s": rate(landed, seconds)}
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(timeout=30)
        await redis.flushdb()
        await redis.aclose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="cc-routing-bench-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "customers.csv"
        seed.write_csv(csv_path, args.customers)
        handles = known_handles(args.customers)
        items = make_envelopes(handles, args.envelopes)
        paced = make_envelopes(handles, args.paced, seed_=8, prefix="p")
        sqlite_url = f"sqlite:///{folder / 'routing.db'}"
        await seed_database(sqlite_url, csv_path)
        results: dict[str, Any] = await embedded(
            sqlite_url, items, paced, args.profile, args.batch_size
        )
        if not args.skip_scaleout:
            results.update(await scaleout(csv_path, items, args.batch_size))
    results.update(
        customers=args.customers, envelopes=args.envelopes, batch_size=args.batch_size,
        peak_rss_mb=peak_rss_mb(),
        **environment(),
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--envelopes", type=int, default=20_000)
    parser.add_argument("--paced", type=int, default=1000, help="envelopes for latency")
    parser.add_argument("--skip-scaleout", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="envelopes per claim and transaction (1: no micro-batching)")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print_table(
        [
            ("embedded messages/s", results["embedded_messages_per_s"], TARGETS["embedded"]),
            ("scale-out messages/s", results.get("scaleout_messages_per_s", "-"),
             TARGETS["scaleout"]),
            ("p50 ms (enqueue→commit)", results["p50_ms"], "-"),
            ("p99 ms (enqueue→commit)", results["p99_ms"], "-"),
            ("ceiling rows/s (bulk insert)", results["ceiling_rows_per_s"], "-"),
            ("ratio to ceiling", results["ratio_to_ceiling"], TARGETS["ratio"]),
        ],
        headers=("figure", "measured", "target"),
    )
    path = write_results("routing_throughput", results)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
