"""The routing pipeline end to end on the database bus, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from crm_core.db import Database
from crm_core.models import (
    Channel,
    Conversation,
    Customer,
    Direction,
    DuplicateSuggestion,
    Interaction,
    OutboxMessage,
    QueueEntry,
    Ticket,
    TicketCategory,
    TicketStatus,
)
from crm_core.services.customers import create_customer
from routing.adapters import ChannelRegistry, PermanentSendError
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig, RoutingContext
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage, OutboundMessage, SenderHandles, ThreadHints
from routing.events import Event, EventBus
from routing.outbox import OutboxDispatcher
from routing.pipeline import DEFAULT_PIPELINE
from routing.rules import RuleSet

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Tuesday
INBOUND = Interaction.direction == Direction.INBOUND
NO_WAIT = RetryPolicy(max_attempts=2, base_delay=timedelta(0), lease=timedelta(seconds=30))


def envelope(key: str, **fields: Any) -> InboundMessage:
    """An inbound e-mail unless told otherwise."""
    data: dict[str, Any] = {
        "channel": Channel.EMAIL,
        "idempotency_key": key,
        "received_at": NOW,
        "sender": SenderHandles(email="zhang.wei@example.cn", display_name="张伟"),
        "subject": "订单查询",
        "text": "请问我的订单什么时候发货？",
    }
    data.update(fields)
    return InboundMessage(**data)


@pytest.fixture
async def engine(db: Database) -> AsyncIterator[RoutingEngine]:
    config = RoutingConfig(region="CN", rules=RuleSet.default())
    yield RoutingEngine(db, DatabaseBus(db, NO_WAIT), config, EventBus())


async def route(engine: RoutingEngine, *envelopes: InboundMessage) -> None:
    for item in envelopes:
        await engine.publish(item)
    while await engine.run_once("test-worker"):
        pass


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_new_sender_becomes_a_lead_with_conversation_ticket_and_events(
    db: Database, engine: RoutingEngine
) -> None:
    seen: list[Event] = []

    async def listener(event: Event) -> None:
        seen.append(event)

    engine.events.subscribe("*", listener)
    await route(engine, envelope("imap:1:1", subject="投诉：快递太慢", text="非常不满意"))
    async with db.sessions() as session:
        customer = await session.scalar(select(Customer))
        assert customer.display_name == "张伟" and customer.lifecycle_stage.value == "lead"
        ticket = await session.scalar(select(Ticket))
        assert ticket.number == "T-000001"
        assert ticket.category == TicketCategory.COMPLAINT
        assert ticket.first_response_due_at is not None
        interaction = await session.scalar(select(Interaction).where(INBOUND))
        assert interaction.external_id == "imap:1:1"
        assert "identify:new-lead" in interaction.meta["rule_hits"]
    names = [e.name for e in seen]
    for expected in ("customer.created", "interaction.logged", "ticket.created",
                     "conversation.assigned"):
        assert expected in names
    assert await count(db, QueueEntry) == 0


async def test_redelivery_changes_nothing(db: Database, engine: RoutingEngine) -> None:
    item = envelope("imap:1:7")
    await route(engine, item)
    assert await engine.publish(item) is True  # acknowledged entries leave the bus
    assert await engine.publish(item) is False  # ... but a queued key is queued once
    await route(engine)
    # Forced through the pipeline again (as after a lost ack), nothing is added either.
    async with db.transaction() as session:
        ctx = RoutingContext(envelope=item, session=session, config=engine.config)
        with pytest.raises(Exception, match="duplicate"):
            await DEFAULT_PIPELINE[0][1](ctx)
    assert await count(db, Interaction, INBOUND) == 1
    assert await count(db, Ticket) == 1


async def test_email_then_phone_link_through_a_shared_identity(
    db: Database, engine: RoutingEngine
) -> None:
    await route(
        engine,
        envelope("web:1", channel=Channel.WEBCHAT,
                 sender=SenderHandles(email="li.na@example.cn", phone="139 1234 5678",
                                      visitor_id="v-1", display_name="李娜"),
                 thread=ThreadHints(chat_id="v-1"), subject=None, text="你好"),
        envelope("call:CA1:ringing", channel=Channel.PHONE,
                 sender=SenderHandles(phone="+86 139-1234-5678"),
                 thread=ThreadHints(call_id="CA1"), subject=None, text=None),
    )
    assert await count(db, Customer) == 1
    async with db.sessions() as session:
        rows = list(await session.scalars(select(Interaction).order_by(Interaction.id)))
    assert len({r.customer_id for r in rows}) == 1
    assert rows[1].kind.value == "call"


async def test_a_typo_in_a_name_makes_a_suggestion_not_a_merge(
    db: Database, engine: RoutingEngine
) -> None:
    async with db.transaction() as session:
        existing = await create_customer(
            session, {"display_name": "张伟明", "phones": ["13800138000"]},
            actor="test", region="CN",
        )
    await route(
        engine,
        envelope("tg:100", channel=Channel.TELEGRAM,
                 sender=SenderHandles(telegram_id="555", display_name="张伟名"),
                 thread=ThreadHints(chat_id="555"), subject=None, text="在吗"),
    )
    assert await count(db, Customer) == 2
    async with db.sessions() as session:
        suggestion = await session.scalar(select(DuplicateSuggestion))
    assert suggestion is not None
    assert existing.id in (suggestion.customer_id, suggestion.candidate_id)
    assert suggestion.status == "open"


async def _telegram_lead(engine: RoutingEngine, key: str, name: str) -> None:
    await route(
        engine,
        envelope(key, channel=Channel.TELEGRAM,
                 sender=SenderHandles(telegram_id=key, display_name=name),
                 thread=ThreadHints(chat_id=key), subject=None, text="你好"),
    )


async def _suggested_with(db: Database, customer_ids: set[int]) -> set[int]:
    async with db.sessions() as session:
        rows = (await session.execute(
            select(DuplicateSuggestion.customer_id, DuplicateSuggestion.candidate_id)
        )).all()
    return {other for pair in rows for other in pair if other in customer_ids}


async def test_a_new_lead_with_a_common_name_is_not_suggested_on_the_name_alone(
    db: Database, engine: RoutingEngine
) -> None:
    async with db.transaction() as session:
        common = [
            (await create_customer(session, {"display_name": "王芳",
                                             "phones": [f"1380013800{i}"]},
                                   actor="test", region="CN")).id
            for i in range(4)
        ]
        rare = [
            (await create_customer(session, {"display_name": "欧阳娜娜",
                                             "phones": [f"1390013900{i}"]},
                                   actor="test", region="CN")).id
            for i in range(2)
        ]
    await _telegram_lead(engine, "701", "王芳")  # four on file: no evidence of one person
    assert await _suggested_with(db, set(common)) == set()
    await _telegram_lead(engine, "702", "欧阳娜娜")  # two on file: worth a look
    assert await _suggested_with(db, set(rare)) == set(rare)
    assert await count(db, Customer) == 8


async def test_threading_by_references_and_by_ticket_number(
    db: Database, engine: RoutingEngine
) -> None:
    first = envelope("imap:1:1", thread=ThreadHints(message_id="<m1@example.cn>"))
    by_reference = envelope(
        "imap:1:2", subject="Re: 订单查询", received_at=NOW + timedelta(minutes=5),
        thread=ThreadHints(message_id="<m2@example.cn>", in_reply_to="<m1@example.cn>",
                           references=("<m1@example.cn>",)),
    )
    by_number = envelope(
        "imap:1:3", subject="还是没收到 [T-000001]", received_at=NOW + timedelta(hours=1),
        thread=ThreadHints(message_id="<m3@example.cn>"),
    )
    await route(engine, first, by_reference, by_number)
    assert await count(db, Conversation) == 1
    assert await count(db, Ticket) == 1
    assert await count(db, Interaction, INBOUND) == 3


async def test_a_stranger_replying_into_a_thread_gets_a_linked_conversation(
    db: Database, engine: RoutingEngine
) -> None:
    first = envelope("imap:1:1", thread=ThreadHints(message_id="<m1@example.cn>"))
    stranger = envelope(
        "imap:1:2", subject="Re: 订单查询 [T-000001]",
        sender=SenderHandles(email="someone.else@example.com", display_name="Someone Else"),
        thread=ThreadHints(message_id="<m9@example.com>", in_reply_to="<m1@example.cn>"),
    )
    await route(engine, first, stranger)
    async with db.sessions() as session:
        conversations = list(await session.scalars(select(Conversation).order_by(Conversation.id)))
    assert len(conversations) == 2
    assert conversations[1].related_conversation_id == conversations[0].id
    assert conversations[1].customer_id != conversations[0].customer_id
    assert await count(db, Ticket) == 2


async def test_a_participant_in_cc_joins_the_thread(db: Database, engine: RoutingEngine) -> None:
    first = envelope(
        "imap:1:1",
        thread=ThreadHints(message_id="<m1@example.cn>", recipients=("Colleague@Example.cn",)),
    )
    colleague = envelope(
        "imap:1:2", subject="Re: 订单查询",
        sender=SenderHandles(email="colleague@example.cn", display_name="王芳"),
        thread=ThreadHints(message_id="<m2@example.cn>", in_reply_to="<m1@example.cn>"),
    )
    await route(engine, first, colleague)
    assert await count(db, Conversation) == 1


async def test_chat_idle_gap_starts_a_new_conversation(db: Database, engine: RoutingEngine) -> None:
    def chat(key: str, at: datetime) -> InboundMessage:
        return envelope(key, channel=Channel.TELEGRAM, received_at=at, subject=None, text="hi",
                        sender=SenderHandles(telegram_id="42", display_name="Emily Carter"),
                        thread=ThreadHints(chat_id="42"))

    await route(engine, chat("tg:1", NOW), chat("tg:2", NOW + timedelta(minutes=10)),
                chat("tg:3", NOW + timedelta(days=2)))
    assert await count(db, Conversation) == 2


async def test_writing_again_soon_after_resolution_reopens_the_ticket(
    db: Database, engine: RoutingEngine
) -> None:
    await route(engine, envelope("imap:1:1", thread=ThreadHints(message_id="<m1@x>")))
    async with db.transaction() as session:
        ticket = await session.scalar(select(Ticket))
        ticket.status = TicketStatus.RESOLVED
        ticket.resolved_at = NOW + timedelta(hours=1)
    await route(engine, envelope("imap:1:2", received_at=NOW + timedelta(days=2),
                                 thread=ThreadHints(message_id="<m2@x>", in_reply_to="<m1@x>")))
    async with db.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket.status == TicketStatus.OPEN and ticket.reopen_count == 1
    assert await count(db, Ticket) == 1


async def test_a_failing_step_retries_then_dead_letters_and_the_worker_goes_on(
    db: Database, engine: RoutingEngine
) -> None:
    async def explode(ctx: RoutingContext) -> None:
        if ctx.envelope.idempotency_key == "imap:bad":
            raise RuntimeError("boom")

    engine.steps = (("explode", explode), *DEFAULT_PIPELINE)
    await route(engine, envelope("imap:bad"), envelope("imap:good"))
    assert await count(db, Interaction, INBOUND) == 1
    [dead] = await engine.bus.dead_letters()
    assert dead.key == "imap:bad" and "explode: RuntimeError: boom" in dead.last_error


async def test_malformed_envelope_goes_straight_to_dead_letters(
    db: Database, engine: RoutingEngine
) -> None:
    await engine.bus.publish("inbound", "junk", '{"channel": "pigeon"}')
    await engine.run_once("w")
    [dead] = await engine.bus.dead_letters()
    assert "malformed envelope" in dead.last_error


class RecordingAdapter:
    """An outbound adapter that records what it was asked to send."""

    channel = Channel.EMAIL

    def __init__(self, fail_times: int = 0, permanent: bool = False) -> None:
        self.sent: list[OutboundMessage] = []
        self.fail_times = fail_times
        self.permanent = permanent

    async def send(self, message: OutboundMessage) -> str | None:
        if self.permanent:
            raise PermanentSendError("mailbox does not exist")
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("smtp down")
        self.sent.append(message)
        return f"<out-{message.outbox_id}@cc>"


async def _queue_reply(db: Database) -> int:
    from routing.outbox import enqueue_reply

    async with db.transaction() as session:
        customer = await create_customer(
            session, {"display_name": "Emily Carter", "emails": ["emily@example.com"]},
            actor="t", region="CN",
        )
        conversation = Conversation(customer_id=customer.id, channel=Channel.EMAIL)
        session.add(conversation)
        await session.flush()
        message = await enqueue_reply(
            session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
            to=SenderHandles(email="emily@example.com"), text="Thanks, we are on it.",
            subject="Re: order [T-000001]", in_reply_to="<m1@x>",
        )
        return message.id


async def test_outbox_sends_retries_and_fails_visibly(db: Database) -> None:
    outbox_id = await _queue_reply(db)
    flaky = RecordingAdapter(fail_times=1)
    registry = ChannelRegistry()
    registry.register(flaky)
    events = EventBus()
    seen: list[Event] = []

    async def remember(event: Event) -> None:
        seen.append(event)

    events.subscribe("*", remember)
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT, events=events)
    assert await dispatcher.dispatch_once() == 1  # fails, retried later
    assert seen == []  # a retry to come is not news for a console
    assert await dispatcher.dispatch_once() == 1  # succeeds
    assert [m.text for m in flaky.sent] == ["Thanks, we are on it."]
    assert [(e.name, e.data["outbox_id"]) for e in seen] == [("message.sent", outbox_id)]
    async with db.sessions() as session:
        row = await session.get(OutboxMessage, outbox_id)
        assert row.status == "sent" and row.attempts == 2
        reply = await session.get(Interaction, row.interaction_id)
        assert reply.direction == Direction.OUTBOUND
        assert reply.message_ref == f"<out-{outbox_id}@cc>"

    doomed_id = await _queue_reply_second(db)
    registry.register(RecordingAdapter(permanent=True))
    assert await dispatcher.dispatch_once() == 1
    assert seen[-1].name == "message.failed" and seen[-1].data["outbox_id"] == doomed_id
    assert "mailbox does not exist" in seen[-1].data["error"]
    async with db.sessions() as session:
        row = await session.get(OutboxMessage, doomed_id)
        assert row.status == "failed" and "mailbox does not exist" in row.last_error
    registry.register(RecordingAdapter())
    assert await dispatcher.retry(doomed_id) is True
    assert await dispatcher.dispatch_once() == 1
    async with db.sessions() as session:
        assert (await session.get(OutboxMessage, doomed_id)).status == "sent"


async def _queue_reply_second(db: Database) -> int:
    from routing.outbox import enqueue_reply

    async with db.transaction() as session:
        customer = await session.scalar(select(Customer))
        conversation = await session.scalar(select(Conversation))
        message = await enqueue_reply(
            session, conversation=conversation, customer=customer, channel=Channel.EMAIL,
            to=SenderHandles(email="emily@example.com"), text="Second", subject="Re: x",
        )
        return message.id


async def _agent(session: Any, login: str, *, languages: list[str], online: bool = True) -> Any:
    from crm_core.models import Agent, Availability

    agent = Agent(
        login=login, display_name=login, password_hash="x", languages=languages,
        availability=Availability.ONLINE if online else Availability.OFFLINE, capacity=5,
        teams=[],
    )
    session.add(agent)
    await session.flush()
    return agent


async def test_vip_goes_to_the_vip_desk_and_the_owner_keeps_their_customer(
    db: Database, engine: RoutingEngine
) -> None:
    from crm_core.models import CustomerTier, Team

    async with db.transaction() as session:
        session.add(CustomerTier(code="vip", name="VIP", name_zh="贵宾", rank=3))
        desk = Team(name="VIP 专席 VIP desk", agents=[])
        session.add(desk)
        vip_agent = await _agent(session, "vip.agent", languages=["zh-CN"])
        desk.agents.append(vip_agent)
        owner = await _agent(session, "owner", languages=["en"])
        await session.flush()
        await create_customer(
            session, {"display_name": "王总", "emails": ["wang@example.cn"], "tier_code": "vip"},
            actor="t", region="CN",
        )
        await create_customer(
            session, {"display_name": "Emily Carter", "emails": ["emily@example.com"],
                      "owner_agent_id": owner.id, "language": "en"},
            actor="t", region="CN",
        )
        desk_id, vip_agent_id, owner_id = desk.id, vip_agent.id, owner.id
    await route(
        engine,
        envelope("imap:vip", sender=SenderHandles(email="wang@example.cn")),
        envelope("imap:own", sender=SenderHandles(email="emily@example.com"),
                 subject="Order", text="Where is my order?"),
    )
    async with db.sessions() as session:
        tickets = {t.subject: t for t in await session.scalars(select(Ticket))}
    assert tickets["订单查询"].team_id == desk_id
    assert tickets["订单查询"].assignee_id == vip_agent_id
    assert tickets["Order"].assignee_id == owner_id


async def test_an_email_gets_an_acknowledgement_with_its_ticket_number(
    db: Database, engine: RoutingEngine
) -> None:
    await route(engine, envelope("imap:ack", thread=ThreadHints(message_id="<q1@example.cn>")))
    async with db.sessions() as session:
        message = await session.scalar(select(OutboxMessage))
        reply = await session.get(Interaction, message.interaction_id)
    assert message.status == "pending" and message.channel == Channel.EMAIL
    assert message.payload["to"]["email"] == "zhang.wei@example.cn"
    assert message.payload["thread"]["in_reply_to"] == "<q1@example.cn>"
    assert "T-000001" in message.payload["text"] and "[T-000001]" in message.payload["subject"]
    assert reply.direction == Direction.OUTBOUND and reply.meta["automated"] is True
