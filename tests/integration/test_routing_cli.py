"""The worker-side commands: dead letters and replay, failed outbox messages and retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from contact_center.cli import main
from crm_core import schema
from crm_core.db import Database
from crm_core.models import Channel, Conversation, Customer, OutboxMessage
from routing.bus import DatabaseBus, RetryPolicy


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cc.db'}"

    async def prepare() -> None:
        database = Database(url)
        await schema.upgrade(database.engine)
        bus = DatabaseBus(database, RetryPolicy(max_attempts=1))
        await bus.publish("inbound", "imap:9:9", '{"broken": true}')
        [delivery] = await bus.claim("inbound", "w")
        await bus.fail(delivery, "boom: bad envelope")
        async with database.transaction() as session:
            customer = Customer(display_name="Emily Carter")
            session.add(customer)
            await session.flush()
            conversation = Conversation(customer_id=customer.id, channel=Channel.EMAIL)
            session.add(conversation)
            await session.flush()
            session.add(
                OutboxMessage(
                    channel=Channel.EMAIL, customer_id=customer.id,
                    conversation_id=conversation.id, payload={"text": "hi"},
                    status="failed", attempts=5, last_error="550 mailbox unavailable",
                )
            )
        await database.dispose()

    asyncio.run(prepare())
    return url


def invoke(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": url,
                                                      "CC_LOG__LEVEL": "WARNING"})
    structlog.reset_defaults()
    return result.exit_code, result.output


def test_dead_letters_are_listed_and_replayed(database_url: str) -> None:
    code, out = invoke(database_url, "bus", "dead-letters")
    assert code == 0 and "imap:9:9" in out and "boom: bad envelope" in out
    entry_id = out.split()[0]
    code, out = invoke(database_url, "bus", "replay", entry_id)
    assert code == 0 and f"replayed {entry_id}" in out
    code, out = invoke(database_url, "bus", "dead-letters")
    assert "imap:9:9" not in out
    code, out = invoke(database_url, "bus", "replay", "999")
    assert code != 0 and "no dead letter 999" in out


def test_failed_outbox_messages_are_listed_and_retried(database_url: str) -> None:
    code, out = invoke(database_url, "outbox", "failed")
    assert code == 0 and "550 mailbox unavailable" in out
    code, out = invoke(database_url, "outbox", "retry", "1")
    assert code == 0 and "queued again" in out

    async def status() -> str:
        database = Database(database_url)
        async with database.sessions() as session:
            row = await session.get(OutboxMessage, 1)
            value = row.status
        await database.dispose()
        return value

    assert asyncio.run(status()) == "pending"
    code, out = invoke(database_url, "outbox", "retry", "1")
    assert code != 0 and "no failed outbox message 1" in out
