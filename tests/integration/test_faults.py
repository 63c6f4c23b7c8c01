"""Crashes and outages with real processes on PostgreSQL + Redis: nothing is lost, nothing
is recorded twice.

The servers here are our own (``tests/faultservers.py``), never the shared ones: the
tests kill and restart them. Each test is bounded in time; a missing binary skips on a
developer machine and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from crm_core.db import Database
from crm_core.models import Channel, Conversation
from crm_core.services.customers import create_customer
from routing.envelope import InboundMessage, SenderHandles, ThreadHints
from routing.outbox import enqueue_reply
from routing.redis_bus import RedisStreamBus
from tests.conftest import Mailbox, require_service, run_blocking
from tests.faultservers import PrivatePostgres, PrivateRedis, Process
from tests.mailservers import DovecotServer, SmtpSink
from tests.mailservers import _children as children_of

pytestmark = pytest.mark.postgres
TEMPLATE = "cc_faults_template"


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """Our own PostgreSQL cluster, with a migrated template database for every test."""
    try:
        server = PrivatePostgres()
    except FileNotFoundError as exc:
        require_service("PostgreSQL server binaries", str(exc))
    try:
        server.init()
    except Exception as exc:
        log = server.log()
        server.destroy()
        require_service("a private PostgreSQL", f"{exc}\n{log}")
    try:
        run_blocking(_admin(server, f'CREATE DATABASE "{TEMPLATE}"'))
        logs = tmp_path_factory.mktemp("faults-migrate")
        migrate = Process(["migrate"], process_env(server.url(TEMPLATE), None),
                          logs / "migrate.log")
        assert migrate.popen.wait(120) == 0, migrate.output()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    """Our own Redis, with an append-only file synced on every write."""
    try:
        server = PrivateRedis()
    except FileNotFoundError as exc:
        require_service("redis-server", str(exc))
    try:
        server.start()
    except Exception as exc:
        server.destroy()
        require_service("a private Redis", str(exc))
    try:
        yield server
    finally:
        server.destroy()


async def _admin(server: PrivatePostgres, statement: str) -> None:
    database = Database(server.admin_url)
    try:
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await database.dispose()


def process_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a child process: ours without any contact-center setting."""
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith("CC_") and name not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(DATABASE_URL=database_url, CC_LOG__FORMAT="json", CC_LOG__LEVEL="WARNING",
               CC_ROUTING__LEASE_SECONDS="3", CC_ROUTING__MAX_ATTEMPTS="50",
               CC_ROUTING__RETRY_BASE_SECONDS="0.2")
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@dataclass
class Deployment:
    """One test's database and Redis, and the processes it started."""

    postgres: PrivatePostgres
    redis_server: PrivateRedis
    database_name: str
    logs: Path
    redis: Redis
    database: Database
    processes: list[Process]

    @property
    def database_url(self) -> str:
        """The test's own database."""
        return self.postgres.url(self.database_name)

    def start(self, *args: str, **env: str) -> Process:
        """Start ``contact-center ARGS`` against this deployment."""
        name = f"{args[0]}-{len(self.processes)}.log"
        process = Process(list(args), process_env(self.database_url, self.redis_server.url,
                                                  **env), self.logs / name)
        self.processes.append(process)
        return process

    def outputs(self) -> str:
        """What the processes logged as warnings and errors (counted), for a failure message."""
        counted: dict[str, int] = {}
        for process in self.processes:
            for line in process.log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    key = line[:300]
                else:
                    key = f"{entry.get('event')}: {str(entry.get('error', ''))[:300]}"
                counted[key] = counted.get(key, 0) + 1
        top = sorted(counted.items(), key=lambda item: -item[1])[:20]
        return "\n".join(f"{count} × {key}" for key, count in top)


@pytest.fixture
async def deployment(
    private_postgres: PrivatePostgres, private_redis: PrivateRedis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """A fresh database (from the migrated template) and an empty Redis."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    await _admin(private_postgres, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    redis = Redis.from_url(private_redis.url)
    await redis.flushall()
    database = Database(private_postgres.url(name))
    found = Deployment(private_postgres, private_redis, name, tmp_path, redis, database, [])
    try:
        yield found
    finally:
        for process in found.processes:
            process.stop()
        await redis.aclose()
        await database.dispose()


def chat(run: str, number: int, senders: int = 100) -> InboundMessage:
    """Message ``number`` of a run, from one of ``senders`` Telegram users."""
    sender = str(900_000 + number % senders)
    return InboundMessage(
        channel=Channel.TELEGRAM, idempotency_key=f"fault:{run}:{number}",
        received_at=datetime.now(UTC),
        sender=SenderHandles(telegram_id=sender, display_name=f"Fault {sender}"),
        thread=ThreadHints(chat_id=sender), text=f"message {number}",
    )


async def publish_all(redis: Redis, run: str, count: int) -> None:
    """Publish as an adapter does, retrying through a Redis outage (a publish is once per
    key, so a retry after a lost answer adds nothing)."""
    bus = RedisStreamBus(redis)
    for number in range(count):
        envelope = chat(run, number)
        while True:
            try:
                await bus.publish("inbound", envelope.idempotency_key, envelope.to_json())
                break
            except Exception:
                await asyncio.sleep(0.1)


async def recorded(database: Database, run: str) -> tuple[int, int]:
    """How many interactions of a run exist, and how many distinct keys they have."""
    async with database.sessions() as session:
        row = (await session.execute(
            text("SELECT count(*), count(DISTINCT external_id) FROM interactions "
                 "WHERE external_id LIKE :pattern"), {"pattern": f"fault:{run}:%"},
        )).one()
    return int(row[0]), int(row[1])


async def wait_recorded(
    found: Deployment, run: str, count: int, within: float, stall: float = 45
) -> tuple[int, int]:
    """Wait until ``count`` interactions of the run exist; give up after ``within``
    seconds, or after ``stall`` seconds without progress (a slow machine is no failure,
    a stuck flow is)."""
    started = time.monotonic()
    seen = (0, 0)
    progressed_at = started
    while time.monotonic() - started < within and time.monotonic() - progressed_at < stall:
        try:
            now = await recorded(found.database, run)
        except Exception:
            now = seen  # the database may be restarting
        if now[0] > seen[0]:
            progressed_at = time.monotonic()
        seen = now
        if seen[0] >= count:
            break
        await asyncio.sleep(0.5)
    return seen


async def dead_letters(redis: Redis) -> int:
    """Entries that failed every attempt."""
    return int(await redis.xlen("cc:bus:inbound:dead"))


async def test_kill_9_of_workers_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    run, count = uuid.uuid4().hex[:8], 5000
    workers = [deployment.start("worker", "--concurrency", "2") for _ in range(2)]
    publisher = asyncio.create_task(publish_all(deployment.redis, run, count))
    rng = random.Random()
    kills = 0
    deadline = time.monotonic() + 90
    while kills < 5 and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        victim = rng.randrange(len(workers))
        workers[victim].kill9()
        kills += 1
        workers[victim] = deployment.start("worker", "--concurrency", "2")
    await asyncio.wait_for(publisher, 120)
    total, distinct = await wait_recorded(deployment, run, count, within=300)
    assert kills == 5
    assert (total, distinct) == (count, count), deployment.outputs()
    assert await dead_letters(deployment.redis) == 0
    assert all(worker.alive() for worker in workers), deployment.outputs()


async def wait_for(condition: Any, within: float, step: float = 0.2) -> bool:
    """Poll an async condition until true or the time is up; errors count as false."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if await condition():
                return True
        except Exception:
            pass
        await asyncio.sleep(step)
    return False


async def test_redis_restart_during_the_flow_loses_nothing(deployment: Deployment) -> None:
    run, count = uuid.uuid4().hex[:8], 1000
    workers = [deployment.start("worker") for _ in range(2)]
    publisher = asyncio.create_task(publish_all(deployment.redis, run, count))

    async def some_recorded() -> bool:
        return (await recorded(deployment.database, run))[0] >= 100

    assert await wait_for(some_recorded, 60), deployment.outputs()
    deployment.redis_server.kill()
    await asyncio.sleep(2)  # adapters and workers meet a refused connection meanwhile
    during = (await recorded(deployment.database, run))[0]
    deployment.redis_server.start()
    await asyncio.wait_for(publisher, 120)
    total, distinct = await wait_recorded(deployment, run, count, within=300)
    assert during < count  # the outage really was during the flow
    assert (total, distinct) == (count, count), deployment.outputs()
    assert await dead_letters(deployment.redis) == 0
    assert all(worker.alive() for worker in workers), deployment.outputs()


async def test_postgres_restart_during_the_flow_workers_reconnect(
    deployment: Deployment,
) -> None:
    run, count = uuid.uuid4().hex[:8], 1000
    workers = [deployment.start("worker") for _ in range(2)]
    await publish_all(deployment.redis, run, count)

    async def some_recorded() -> bool:
        return (await recorded(deployment.database, run))[0] >= 100

    assert await wait_for(some_recorded, 60), deployment.outputs()
    await asyncio.to_thread(deployment.postgres.stop, "immediate")
    await asyncio.sleep(2)
    await asyncio.to_thread(deployment.postgres.start)
    total, distinct = await wait_recorded(deployment, run, count, within=300)
    assert (total, distinct) == (count, count), deployment.outputs()
    assert await dead_letters(deployment.redis) == 0
    assert all(worker.alive() for worker in workers), deployment.outputs()
    logs = "".join(p.log_path.read_text(errors="replace") for p in deployment.processes)
    assert "routing.database_unavailable" in logs and "routing.database_back" in logs


async def queue_replies(database: Database, count: int) -> None:
    """``count`` e-mail replies in the outbox of one conversation."""
    async with database.transaction() as session:
        customer = await create_customer(session, {
            "display_name": "Outage", "language": "en",
            "identities": [{"kind": "email", "value": "outage@example.com"}],
        }, actor="test", region="CN")
        conversation = Conversation(customer_id=customer.id, channel=Channel.EMAIL,
                                    subject="Outage")
        session.add(conversation)
        await session.flush()
        for number in range(count):
            await enqueue_reply(
                session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
                to=SenderHandles(email="outage@example.com"), text=f"reply {number}",
                subject="Outage",
            )


async def outbox_states(database: Database) -> dict[str, int]:
    """How many outbox messages are in each state, and the most attempts of one."""
    async with database.sessions() as session:
        rows = (await session.execute(
            text("SELECT status, count(*), max(attempts) FROM outbox GROUP BY status")
        )).all()
    states = {str(status): int(number) for status, number, _most in rows}
    states["max_attempts"] = max((int(most) for _s, _n, most in rows), default=0)
    return states


async def test_smtp_down_for_a_while_the_outbox_retries_and_delivers(
    deployment: Deployment, tmp_path: Path
) -> None:
    sink = SmtpSink()
    sink.start()
    port = sink.port
    sink.stop()  # down before the first try
    count = 10
    await queue_replies(deployment.database, count)
    try:
        deployment.start(
            "worker", CC_DATA_DIR=str(tmp_path / "var"), CC_EMAIL__SMTP__HOST="127.0.0.1",
            CC_EMAIL__SMTP__PORT=str(port), CC_EMAIL__SMTP__SECURITY="plain",
            CC_EMAIL__SMTP__FROM_ADDRESS="support@shop.example",
        )

        async def retried() -> bool:
            states = await outbox_states(deployment.database)
            return states.get("pending", 0) == count and states["max_attempts"] >= 2

        assert await wait_for(retried, 30), deployment.outputs()
        sink.start(port)
        await sink.wait_for(count, timeout=30)

        async def all_sent() -> bool:
            return (await outbox_states(deployment.database)).get("sent", 0) == count

        assert await wait_for(all_sent, 30), deployment.outputs()
        await asyncio.sleep(1)  # nothing more arrives
        received = sink.messages
    finally:
        sink.stop()
    ids = {email.message_from_bytes(mail.content)["Message-ID"] for mail in received}
    assert len(received) == count and len(ids) == count  # each reply once


def imap_mail(number: int) -> bytes:
    """A customer's e-mail with a unique Message-ID."""
    return (
        f"From: Lin Wei <lin.wei.{number}@example.com>\r\n"
        f"To: support@shop.example\r\nSubject: IMAP fault {number}\r\n"
        f"Message-ID: <imap-fault-{number}-{uuid.uuid4().hex}@example.com>\r\n"
        "Date: Sat, 05 Dec 2026 10:00:00 +0800\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"\r\nQuestion number {number}\r\n"
    ).encode()


async def imap_recorded(database: Database) -> tuple[int, int]:
    """Interactions of the IMAP test's mail, and how many different ones."""
    async with database.sessions() as session:
        row = (await session.execute(
            text("SELECT count(*), count(DISTINCT subject) FROM interactions "
                 "WHERE subject LIKE 'IMAP fault %'")
        )).one()
    return int(row[0]), int(row[1])


def kill_imap_sessions(dovecot: DovecotServer) -> int:
    """Kill the IMAP processes of our Dovecot (each serves one client connection)."""
    killed = 0
    for pid in children_of(dovecot.pid or 0):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name == "imap":
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


async def test_imap_connection_dropped_idle_reconnects_and_skips_nothing(
    deployment: Deployment, mailbox: Mailbox, tmp_path: Path
) -> None:
    env = {
        "CC_DATA_DIR": str(tmp_path / "var"),
        "CC_EMAIL__MAILBOXES": json.dumps([{
            "name": "support", "host": mailbox.host, "port": mailbox.port,
            "security": "plain", "username": mailbox.user, "password": mailbox.password,
            "address": "support@shop.example", "idle": True,
        }]),
    }
    deployment.start("email", "fetch", **env)
    deployment.start("worker", **env)
    for number in range(5):
        mailbox.deliver(imap_mail(number))

    async def first_five() -> bool:
        return (await imap_recorded(deployment.database))[0] >= 5

    assert await wait_for(first_five, 30), deployment.outputs()
    await asyncio.sleep(0.5)  # the reader is back in IDLE
    assert kill_imap_sessions(mailbox.server) >= 1
    for number in range(5, 10):  # arrives while the reader has no connection
        mailbox.deliver(imap_mail(number))

    async def all_ten() -> bool:
        return (await imap_recorded(deployment.database))[0] >= 10

    assert await wait_for(all_ten, 40), deployment.outputs()
    mailbox.deliver(imap_mail(10))  # and IDLE works on the new connection

    async def eleven() -> bool:
        return (await imap_recorded(deployment.database))[0] >= 11

    assert await wait_for(eleven, 30), deployment.outputs()
    await asyncio.sleep(1)
    assert await imap_recorded(deployment.database) == (11, 11)
    logs = "".join(p.log_path.read_text(errors="replace") for p in deployment.processes)
    assert "imap.connection_problem" in logs
