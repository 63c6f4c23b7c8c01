"""The e-mail channel against real servers: Dovecot (IMAP in) and aiosmtpd (SMTP out).

Runs on SQLite and on PostgreSQL with the database bus; mail goes through the routing
engine and the outbox exactly as in production.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.email.imap import ImapMailbox, MailboxConfig
from channels.email.inbound import MailIntake
from channels.email.smtp import SmtpAdapter, SmtpConfig
from crm_core.db import Database
from crm_core.models import (
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    Interaction,
    OutboxMessage,
    QuarantinedMessage,
    QueueEntry,
    Ticket,
)
from crm_core.services.customers import create_customer
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import SenderHandles
from routing.events import EventBus
from routing.intake import load_cursor
from routing.outbox import OutboxDispatcher, enqueue_reply
from routing.rules import RuleSet
from tests.conftest import Mailbox
from tests.mailservers import SmtpSink

INBOUND = Interaction.direction == Direction.INBOUND
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))


def mail(
    subject: str,
    body: str,
    *,
    sender: str = "张伟 <zhang.wei@example.cn>",
    to: str = "support@shop.example",
    charset: str = "utf-8",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A customer's mail as CRLF bytes, the way an MDA stores it."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="example.cn")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body, charset=charset)
    return message.as_bytes()


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """The routing engine on the database bus."""
    config = RoutingConfig(region="CN", rules=RuleSet.default())
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT), config, EventBus())


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    """A private blob store."""
    return FileBlobStore(tmp_path / "blobs")


def reader(
    mailbox: Mailbox, db: Database, engine: RoutingEngine, blobs: FileBlobStore, **options: Any
) -> ImapMailbox:
    """An IMAP reader of the test account, publishing to the engine's bus."""
    values: dict[str, Any] = {
        "name": "support", "host": mailbox.host, "port": mailbox.port, "security": "plain",
        "username": mailbox.user, "password": mailbox.password,
        "address": "support@shop.example", "idle_seconds": 5.0, "poll_seconds": 0.5,
    }
    config = MailboxConfig(**{**values, **options})
    return ImapMailbox(config, MailIntake(db, blobs, engine.publish), db)


async def route_all(engine: RoutingEngine) -> None:
    """Route until the bus is empty."""
    while await engine.run_once("test-worker"):
        pass


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def wait_until(predicate: Any, seconds: float = 15.0) -> None:
    """Poll an async predicate until it holds."""
    async with asyncio.timeout(seconds):
        while not await predicate():  # noqa: ASYNC110 - polling the database is the point
            await asyncio.sleep(0.1)


@pytest.fixture
async def running(
    mailbox: Mailbox, db: Database, engine: RoutingEngine, blobs: FileBlobStore
) -> AsyncIterator[ImapMailbox]:
    """The reader running in the background (IDLE), stopped after the test."""
    imap = reader(mailbox, db, engine, blobs)
    stop = asyncio.Event()
    task = asyncio.create_task(imap.run(stop))
    yield imap
    stop.set()
    await asyncio.wait_for(task, 15)


async def test_mail_to_ticket_reply_and_answer_thread_into_one_ticket(
    db: Database,
    engine: RoutingEngine,
    blobs: FileBlobStore,
    mailbox: Mailbox,
    smtp_sink: SmtpSink,
    running: ImapMailbox,
) -> None:
    """Dovecot → IDLE → ticket → agent reply via SMTP → customer answer → same ticket."""
    first_id = make_msgid(domain="example.cn")
    mailbox.deliver(mail("发票抬头错了", "你好，我的发票抬头写错了，请帮忙重开。",
                         charset="gbk", message_id=first_id))

    async def routed() -> bool:
        await route_all(engine)
        return await count(db, Ticket) == 1

    await wait_until(routed)
    async with db.sessions() as session:
        ticket = (await session.scalars(select(Ticket))).one()
        conversation = await session.get(Conversation, ticket.conversation_id)
        customer = await session.get(Customer, ticket.customer_id)
        inbound = (await session.scalars(
            select(Interaction).where(Interaction.direction == Direction.INBOUND))).one()
    assert customer is not None and customer.display_name == "张伟"
    assert inbound.text == "你好，我的发票抬头写错了，请帮忙重开。"
    assert inbound.message_ref == first_id
    assert inbound.meta["raw_ref"] and await blobs.exists(inbound.meta["raw_ref"])

    async with db.transaction() as session:
        conversation = await session.get(Conversation, ticket.conversation_id)
        customer = await session.get(Customer, ticket.customer_id)
        assert conversation is not None and customer is not None
        await enqueue_reply(
            session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
            to=SenderHandles(email="zhang.wei@example.cn", display_name="张伟"),
            text="您好，已为您重新开具发票。", subject="Re: 发票抬头错了",
        )
    adapter = SmtpAdapter(
        SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, security="plain",
                   from_address="support@shop.example", from_name="客服中心"),
        blobs,
    )
    registry = ChannelRegistry()
    registry.register(adapter)
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    assert await dispatcher.dispatch_once() == 2  # the rules' acknowledgement and the reply
    await adapter.close()
    received = await smtp_sink.wait_for(2)
    assert {r.rcpt_tos[0] for r in received} == {"zhang.wei@example.cn"}
    sent = [email.message_from_bytes(r.content, policy=email.policy.default) for r in received]
    acknowledgement, reply = sorted(sent, key=lambda m: "重新开具" in m.get_body(("plain",))
                                    .get_content())
    assert acknowledgement["Auto-Submitted"] == "auto-replied"
    assert reply["Auto-Submitted"] is None
    assert reply["In-Reply-To"] == first_id
    assert first_id in reply["References"]
    assert f"[{ticket.number}]" in reply["Subject"]
    assert "发票抬头错了" in reply["Subject"]
    assert "已为您重新开具发票" in reply.get_body(("plain",)).get_content()
    html_part = reply.get_body(("html",)).get_content()
    assert "已为您重新开具发票" in html_part and "&lt;br&gt;" not in html_part
    our_id = reply["Message-ID"]
    async with db.sessions() as session:
        outbound = await session.scalar(
            select(Interaction).where(Interaction.direction == Direction.OUTBOUND)
            .order_by(Interaction.id.desc()).limit(1)
        )
    assert outbound is not None and outbound.message_ref == our_id

    mailbox.deliver(mail("Re: 发票抬头错了", "收到，谢谢！\n\n> 您好，已为您重新开具发票。",
                         headers={"In-Reply-To": our_id, "References": f"{first_id} {our_id}"}))

    async def answered() -> bool:
        await route_all(engine)
        return await count(db, Interaction, INBOUND) == 2

    await wait_until(answered)
    assert await count(db, Ticket) == 1
    async with db.sessions() as session:
        answer = await session.scalar(
            select(Interaction).where(Interaction.direction == Direction.INBOUND)
            .order_by(Interaction.id.desc()).limit(1)
        )
    assert answer is not None and answer.conversation_id == ticket.conversation_id
    assert answer.text == "收到，谢谢！"


async def test_restart_mid_batch_loses_nothing_and_duplicates_nothing(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """A crash after some mail of a batch was published: the rerun completes it once."""
    for n in range(12):
        mailbox.deliver(mail(f"Order {n}", f"Where is order {n}?",
                             sender=f"Customer {n} <c{n}@example.com>"))
    crashing = reader(mailbox, db, engine, blobs, fetch_batch=5)
    published = 0
    original = crashing.intake.publish

    async def publish_then_crash(envelope: Any) -> bool:
        nonlocal published
        if published == 7:
            raise ConnectionError("worker killed")
        published += 1
        return await original(envelope)

    crashing.intake.publish = publish_then_crash
    with pytest.raises(ConnectionError):
        await crashing.sync_once()
    await crashing.close()
    cursor = await load_cursor(db, Channel.EMAIL, "support:INBOX")
    assert cursor["last_uid"] == 5  # only the first whole batch is committed
    assert await count(db, QueueEntry) == 7

    fresh = reader(mailbox, db, engine, blobs, fetch_batch=5)
    assert await fresh.sync_once() == 7  # UIDs 6..12 read again
    await fresh.close()
    await route_all(engine)
    assert await count(db, Interaction, INBOUND) == 12
    assert await count(db, Ticket) == 12
    assert (await load_cursor(db, Channel.EMAIL, "support:INBOX"))["last_uid"] == 12


async def test_uidvalidity_change_reads_again_without_duplicates(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """A rebuilt mailbox (new UIDVALIDITY) is read again; nothing is logged twice."""
    for n in range(3):
        mailbox.deliver(mail(f"Question {n}", "Hello", sender=f"c{n}@example.com"))
    first = reader(mailbox, db, engine, blobs)
    assert await first.sync_once() == 3
    await first.close()
    await route_all(engine)
    before = await load_cursor(db, Channel.EMAIL, "support:INBOX")

    mailbox.reset_uidvalidity()
    mailbox.deliver(mail("Question 3", "Hello", sender="c3@example.com"))
    second = reader(mailbox, db, engine, blobs)
    assert await second.sync_once() == 4
    await second.close()
    await route_all(engine)
    after = await load_cursor(db, Channel.EMAIL, "support:INBOX")
    assert after["uidvalidity"] != before["uidvalidity"]
    assert await count(db, Interaction, INBOUND) == 4
    assert await count(db, Ticket) == 4


async def test_the_same_message_in_two_folders_is_one_interaction(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """One mail sent to two of our addresses (two folders here) is logged once."""
    raw = mail("Refund", "Please refund order 7.")
    mailbox.deliver(raw)
    mailbox.deliver(raw, folder="Sales")
    inbox = reader(mailbox, db, engine, blobs)
    sales = reader(mailbox, db, engine, blobs, folder="Sales", name="sales")
    await inbox.sync_once()
    await sales.sync_once()
    await inbox.close()
    await sales.close()
    await route_all(engine)
    assert await count(db, Interaction, INBOUND) == 1
    assert await count(db, Ticket) == 1


async def test_unreadable_mail_is_quarantined_and_the_rest_goes_on(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """Mail without a sender is set aside with its raw bytes; later mail still flows."""
    mailbox.deliver(b"Subject: no sender at all\r\n\r\nbody\r\n")
    mailbox.deliver(mail("Fine", "A normal mail."))
    imap = reader(mailbox, db, engine, blobs)
    assert await imap.sync_once() == 2
    await imap.close()
    await route_all(engine)
    async with db.sessions() as session:
        item = (await session.scalars(select(QuarantinedMessage))).one()
    assert "no sender" in item.reason
    assert item.source == "support:INBOX" and item.status == "quarantined"
    assert b"no sender at all" in await blobs.get(item.raw_ref)
    assert await count(db, Interaction, INBOUND) == 1
    assert (await load_cursor(db, Channel.EMAIL, "support:INBOX"))["last_uid"] == 2


async def test_processed_mail_is_moved_to_the_processed_folder(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """With a processed folder configured, handled mail leaves the inbox."""
    mailbox.create_folder("Processed")
    mailbox.deliver(mail("Move me", "Hello"))
    imap = reader(mailbox, db, engine, blobs, processed_folder="Processed")
    assert await imap.sync_once() == 1
    await imap.close()
    assert mailbox.server.message_files(mailbox.user) == []
    assert len(mailbox.server.message_files(mailbox.user, "Processed")) == 1


async def test_mail_is_marked_seen_only_after_it_is_on_the_bus(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """A publish failure leaves the mail unseen; success marks it \\Seen."""
    path = mailbox.deliver(mail("Seen?", "Hello"))
    imap = reader(mailbox, db, engine, blobs)

    async def down(_envelope: Any) -> bool:
        raise ConnectionError("bus down")

    original, imap.intake.publish = imap.intake.publish, down
    with pytest.raises(ConnectionError):
        await imap.sync_once()
    await imap.close()
    files = mailbox.server.message_files(mailbox.user)
    assert all(":2,S" not in f.name for f in files), files
    imap.intake.publish = original
    assert await imap.sync_once() == 1
    await imap.close()
    files = mailbox.server.message_files(mailbox.user)
    assert any("S" in f.name.split(":2,")[-1] for f in files if ":2," in f.name), (path, files)


async def test_auto_replies_and_lists_open_no_ticket_and_get_no_auto_answer(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """Out-of-office and list mail are logged on the customer, with no ticket."""
    mailbox.deliver(mail("自动回复: 发票", "我正在休假，6月10日返回。",
                         headers={"Auto-Submitted": "auto-replied"}))
    mailbox.deliver(mail("Weekly news", "Our news", sender="news@list.example",
                         headers={"List-Id": "<news.list.example>", "Precedence": "bulk"}))
    imap = reader(mailbox, db, engine, blobs)
    await imap.sync_once()
    await imap.close()
    await route_all(engine)
    assert await count(db, Interaction, INBOUND) == 2
    assert await count(db, Ticket) == 0
    assert await count(db, OutboxMessage) == 0
    async with db.sessions() as session:
        kinds = sorted(i.meta.get("automated") for i in await session.scalars(select(Interaction)))
    assert kinds == ["auto_reply", "list"]


async def test_a_bounce_marks_the_customers_address_and_a_new_mail_clears_it(
    db: Database, engine: RoutingEngine, blobs: FileBlobStore, mailbox: Mailbox
) -> None:
    """A DSN marks the failed address as bouncing; the customer writing again clears it."""
    async with db.transaction() as session:
        await create_customer(session, {
            "display_name": "李娜", "identities": [{"kind": "email", "value": "li.na@example.cn"}],
        }, actor="test", region="CN")
    dsn = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>\r\n"
        b"To: support@shop.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-1@mx.shop.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.shop.example\r\n\r\n"
        b"Final-Recipient: rfc822; li.na@example.cn\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"\r\n--b1--\r\n"
    )
    mailbox.deliver(dsn)
    imap = reader(mailbox, db, engine, blobs)
    await imap.sync_once()
    await route_all(engine)
    async with db.sessions() as session:
        identity = await session.scalar(
            select(CustomerIdentity).where(CustomerIdentity.value == "li.na@example.cn")
        )
        customers = await session.scalar(select(func.count()).select_from(Customer))
    assert identity is not None and identity.bounced_at is not None
    assert customers == 1  # the bounce went onto 李娜's record, no "MAILER-DAEMON" lead
    assert await count(db, Ticket) == 0

    mailbox.deliver(mail("我的新邮箱可以用了", "请再发一次。", sender="李娜 <li.na@example.cn>"))
    await imap.sync_once()
    await imap.close()
    await route_all(engine)
    async with db.sessions() as session:
        identity = await session.scalar(
            select(CustomerIdentity).where(CustomerIdentity.value == "li.na@example.cn")
        )
    assert identity is not None and identity.bounced_at is None


async def test_smtp_temporary_failure_retries_and_permanent_failure_is_final(
    db: Database, blobs: FileBlobStore, smtp_sink: SmtpSink
) -> None:
    """451 → the outbox retries and succeeds; 550 → failed for good, visible."""
    async with db.transaction() as session:
        customer = await create_customer(session, {
            "display_name": "Bob", "language": "en",
            "identities": [{"kind": "email", "value": "bob@example.com"}],
        }, actor="test", region="CN")
        conversation = Conversation(customer_id=customer.id, channel=Channel.EMAIL,
                                    subject="Hello")
        session.add(conversation)
        await session.flush()
        for text in ("first", "second"):
            await enqueue_reply(
                session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
                to=SenderHandles(email="bob@example.com"), text=text, subject="Hello",
            )
    adapter = SmtpAdapter(
        SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, security="plain",
                   from_address="support@shop.example"),
        blobs,
    )
    registry = ChannelRegistry()
    registry.register(adapter)
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    smtp_sink.fail_next(1, code=451)
    await dispatcher.dispatch_once(limit=1)
    async with db.sessions() as session:
        first = await session.scalar(select(OutboxMessage).order_by(OutboxMessage.id).limit(1))
    assert first is not None and first.status == "pending" and "451" in (first.last_error or "")
    await dispatcher.dispatch_once()
    assert len(await smtp_sink.wait_for(2)) == 2
    smtp_sink.fail_next(1, code=550)
    async with db.transaction() as session:
        conversation = await session.scalar(select(Conversation))
        customer = await session.get(Customer, conversation.customer_id)
        await enqueue_reply(
            session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
            to=SenderHandles(email="bob@example.com"), text="third", subject="Hello",
        )
    await dispatcher.dispatch_once()
    await adapter.close()
    async with db.sessions() as session:
        statuses = [m.status for m in await session.scalars(
            select(OutboxMessage).order_by(OutboxMessage.id))]
    assert statuses == ["sent", "sent", "failed"]
    english = email.message_from_bytes(smtp_sink.messages[0].content,
                                       policy=email.policy.default)
    assert english["Content-Language"] == "en"
    assert english.get_body(("plain",)).get_content().strip() == "first"  # no ticket: no footer
