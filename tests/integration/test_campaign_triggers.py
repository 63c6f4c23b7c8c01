"""Every campaign trigger on SQLite and PostgreSQL, driven by an injected clock."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select, update

from crm_core.db import Database
from crm_core.models import (
    Channel,
    Conversation,
    Direction,
    Interaction,
    InteractionKind,
    LifecycleStage,
    OutboxMessage,
    Ticket,
    TicketCategory,
    TicketStatus,
)
from crm_core.services.customers import change_lifecycle, update_customer
from tests.campaign_support import (
    Clock,
    add_customer,
    add_tier,
    campaign,
    config_from,
    count,
    email_customer,
    outbox,
    scheduler,
    sends,
    utc,
)


async def test_once_fans_out_to_the_audience_at_its_time_and_never_twice(db: Database) -> None:
    await add_tier(db, "vip")
    first = await add_customer(db, "张伟", **email_customer("zw@example.cn", tier_code="vip",
                                                           language="zh-CN"))
    second = await add_customer(db, "Mary Smith", **email_customer(
        "mary@example.com", tier_code="vip", language="en"))
    await add_customer(db, "李娜", **email_customer("ln@example.cn"))  # not VIP
    config = config_from(campaign(
        "vip-notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
        extra='audience = { tier = "vip" }\nchannels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 1, 0))
    runner = scheduler(db, config, clock)
    report = await runner.tick()
    assert report.planned == 0 and await sends(db) == []

    clock.set(utc(2026, 5, 4, 2, 0))  # 10:00 in Shanghai
    report = await runner.tick()
    assert report.planned == 2 and report.queued == 2
    rows = await sends(db)
    assert {r.customer_id for r in rows} == {first, second}
    assert {r.occurrence for r in rows} == {"once"}
    assert all(r.status == "queued" and r.channel == Channel.EMAIL for r in rows)
    messages = await outbox(db)
    assert sorted(m.payload["to"]["email"] for m in messages) == ["mary@example.com",
                                                                  "zw@example.cn"]
    by_address = {m.payload["to"]["email"]: m for m in messages}
    assert by_address["zw@example.cn"].payload["text"].startswith("张伟，您好！")
    assert by_address["mary@example.com"].payload["text"].startswith("Hello Mary Smith!")
    assert "/unsubscribe/" in by_address["zw@example.cn"].payload["text"]
    assert by_address["zw@example.cn"].payload["metadata"]["campaign_id"] == rows[0].campaign_id
    async with db.sessions() as session:
        logged = list(await session.scalars(select(Interaction).where(
            Interaction.direction == Direction.OUTBOUND)))
    assert len(logged) == 2 and all(i.meta["send_id"] for i in logged)
    assert all(i.occurred_at == clock.now for i in logged)

    clock.advance(minutes=5)
    again = await scheduler(db, config, clock).tick()  # a restarted scheduler
    assert again.planned == 0 and again.queued == 0
    assert await count(db, OutboxMessage) == 2


async def test_cron_fires_at_each_occurrence_in_the_campaign_zone(db: Database) -> None:
    customer = await add_customer(db, **email_customer("zw@example.cn"))
    config = config_from(campaign(
        "weekly", '{ kind = "cron", cron = "0 10 * * mon" }', extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 3, 12, 0))  # Sunday 20:00 in Shanghai
    runner = scheduler(db, config, clock)
    await runner.tick()
    assert await sends(db) == []
    clock.set(utc(2026, 5, 4, 2, 0))  # Monday 10:00 in Shanghai
    await runner.tick()
    clock.set(utc(2026, 5, 11, 2, 1))  # the next Monday
    await runner.tick()
    rows = await sends(db)
    assert [(r.customer_id, r.occurrence, r.status) for r in rows] == [
        (customer, "cron:2026-05-04T02:00Z", "queued"),
        (customer, "cron:2026-05-11T02:00Z", "queued"),
    ]


async def test_cron_occurrences_missed_beyond_the_grace_are_not_sent_late(db: Database) -> None:
    await add_customer(db, **email_customer("zw@example.cn"))
    config = config_from(campaign(
        "daily", '{ kind = "cron", cron = "0 10 * * *", grace_hours = 3 }',
        extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 1, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    clock.set(utc(2026, 5, 7, 3, 0))  # down for three days: only today's is within grace
    await runner.tick()
    assert [r.occurrence for r in await sends(db)] == ["cron:2026-05-07T02:00Z"]


async def _resolved_ticket(db: Database, customer_id: int, at: object, *,
                           category: TicketCategory = TicketCategory.INQUIRY,
                           channel: Channel = Channel.EMAIL) -> int:
    async with db.transaction() as session:
        conversation = Conversation(customer_id=customer_id, channel=channel)
        session.add(conversation)
        await session.flush()
        ticket = Ticket(subject="发票抬头错了", customer_id=customer_id, category=category,
                        conversation_id=conversation.id, status=TicketStatus.RESOLVED,
                        resolved_at=at)
        session.add(ticket)
        await session.flush()
        ticket.number = f"T-{ticket.id:06d}"
        return ticket.id


async def test_ticket_resolved_sends_after_the_delay_with_the_ticket(db: Database) -> None:
    customer = await add_customer(db, **email_customer("zw@example.cn"))
    config = config_from(campaign(
        "thanks", '{ kind = "ticket_resolved", delay_minutes = 60, category = "inquiry" }',
        extra='channels = ["email"]', templates="""
[campaigns.templates.default.zh-CN]
subject = "{{ ticket.number }} 已解决"
text = "工单 {{ ticket.number }}「{{ ticket.subject }}」已解决。"
"""))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()  # the campaign starts watching now
    ticket_id = await _resolved_ticket(db, customer, clock.advance(minutes=10))
    await _resolved_ticket(db, customer, clock.now, category=TicketCategory.FAULT)
    await runner.tick()
    [row] = await sends(db)
    assert row.occurrence == f"ticket:{ticket_id}" and row.ticket_id == ticket_id
    assert row.status == "pending" and row.due_at == clock.now + timedelta(minutes=60)
    clock.advance(minutes=61)
    await runner.tick()
    [message] = await outbox(db)
    assert message.payload["text"].startswith(f"工单 T-{ticket_id:06d}「发票抬头错了」已解决。\n")
    assert message.payload["subject"] == f"T-{ticket_id:06d} 已解决"
    async with db.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
    assert ticket is not None and message.conversation_id == ticket.conversation_id


async def test_customer_created_welcomes_new_customers_only(db: Database) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    config = config_from(campaign("welcome", '{ kind = "customer_created", delay_minutes = 5 }',
                                  extra='channels = ["email"]'))
    early = await add_customer(db, "老客户", **email_customer("old@example.cn"))
    runner = scheduler(db, config, clock)
    await runner.tick()
    newcomer = await add_customer(db, "新客户", **email_customer("new@example.cn"))
    stamp = clock.advance(minutes=1)
    async with db.transaction() as session:
        from crm_core.models import Customer

        await session.execute(update(Customer).where(Customer.id == newcomer)
                              .values(created_at=stamp))
        await session.execute(update(Customer).where(Customer.id == early)
                              .values(created_at=stamp - timedelta(days=30)))
    await runner.tick()
    clock.advance(minutes=5)
    await runner.tick()
    assert [(r.customer_id, r.occurrence, r.status) for r in await sends(db)] == [
        (newcomer, "created", "queued")]


async def test_birthday_at_ten_in_the_customers_own_time_zone(db: Database) -> None:
    new_york = await add_customer(db, "Mary Smith", birthday=date(1990, 5, 4),
                                  timezone="America/New_York", language="en",
                                  **email_customer("mary@example.com"))
    shanghai = await add_customer(db, "张伟", birthday=date(1985, 5, 4),
                                  **email_customer("zw@example.cn"))
    await add_customer(db, "李娜", birthday=date(1985, 5, 5), **email_customer("ln@example.cn"))
    config = config_from(campaign("birthday", '{ kind = "birthday", at = "10:00" }',
                                  extra='purpose = "marketing"\nchannels = ["email"]'))
    clock = Clock(utc(2026, 5, 3, 12, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    rows = {r.customer_id: r for r in await sends(db)}
    assert set(rows) == {new_york, shanghai}  # planned a day ahead, sent at their time
    assert rows[shanghai].due_at == utc(2026, 5, 4, 2, 0)  # 10:00 +08:00
    assert rows[new_york].due_at == utc(2026, 5, 4, 14, 0)  # 10:00 -04:00
    assert {r.occurrence for r in rows.values()} == {"birthday:2026"}
    clock.set(utc(2026, 5, 4, 2, 0))
    await runner.tick()
    assert [(r.customer_id, r.status) for r in await sends(db, status="queued")] == [
        (shanghai, "queued")]
    clock.set(utc(2026, 5, 4, 14, 0))
    await runner.tick()
    assert len(await sends(db, status="queued")) == 2
    clock.advance(hours=30)
    await runner.tick()
    assert len(await sends(db)) == 3  # 李娜 (5 May) was planned on the way


async def test_leap_day_birthdays_are_greeted_on_28_february(db: Database) -> None:
    customer = await add_customer(db, birthday=date(2000, 2, 29),
                                  **email_customer("leap@example.cn"))
    config = config_from(campaign("birthday", '{ kind = "birthday" }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2027, 2, 27, 12, 0))
    await scheduler(db, config, clock).tick()
    [row] = await sends(db)
    assert (row.customer_id, row.due_at) == (customer, utc(2027, 2, 28, 2, 0))


async def test_contract_end_reminder_thirty_days_before(db: Database) -> None:
    customer = await add_customer(db, custom_attributes={"contract_end": "2026-06-30"},
                                  **email_customer("zw@example.cn"))
    await add_customer(db, "李娜", custom_attributes={"contract_end": "2026-09-30"},
                       **email_customer("ln@example.cn"))
    await add_customer(db, "王芳", custom_attributes={"contract_end": "not a date"},
                       **email_customer("wf@example.cn"))
    config = config_from(campaign(
        "renewal", '{ kind = "contract_end", days_before = 30, at = "09:30" }',
        extra='channels = ["email"]', templates="""
[campaigns.templates.default.zh-CN]
subject = "合同将于 {{ customer.attributes.contract_end }} 到期"
text = "您的合同将于 {{ customer.attributes.contract_end }} 到期。"
"""))
    clock = Clock(utc(2026, 5, 31, 0, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    [row] = await sends(db)
    assert row.customer_id == customer and row.occurrence == "contract_end:2026-06-30"
    assert row.due_at == utc(2026, 5, 31, 1, 30)
    clock.set(utc(2026, 5, 31, 1, 30))
    await runner.tick()
    [message] = await outbox(db)
    assert message.payload["text"].startswith("您的合同将于 2026-06-30 到期。")


async def test_no_interaction_for_n_days(db: Database) -> None:
    quiet = await add_customer(db, "沉默客户", **email_customer("quiet@example.cn"))
    busy = await add_customer(db, "活跃客户", **email_customer("busy@example.cn"))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    async with db.transaction() as session:
        for customer_id, days in ((quiet, 100), (busy, 10)):
            session.add(Interaction(customer_id=customer_id, channel=Channel.EMAIL,
                                    direction=Direction.INBOUND, kind=InteractionKind.MESSAGE,
                                    text="hi", occurred_at=clock.now - timedelta(days=days)))
    config = config_from(campaign("win-back", '{ kind = "no_interaction", days = 90 }',
                                  extra='channels = ["email"]'))
    runner = scheduler(db, config, clock)
    await runner.tick()
    [row] = await sends(db)
    expected = (clock.now - timedelta(days=100)).date().isoformat()
    assert (row.customer_id, row.occurrence, row.status) == (quiet, f"inactive:{expected}",
                                                             "queued")
    clock.advance(days=85)  # 95 days since the busy customer wrote
    await runner.tick()
    assert {r.customer_id for r in await sends(db)} == {quiet, busy}
    clock.advance(days=1)
    await runner.tick()
    assert len(await sends(db)) == 2


async def test_lifecycle_change_to_a_stage(db: Database) -> None:
    customer = await add_customer(db, lifecycle_stage="active", **email_customer("a@example.cn"))
    other = await add_customer(db, "李娜", lifecycle_stage="active",
                               **email_customer("b@example.cn"))
    config = config_from(campaign(
        "dormant", '{ kind = "lifecycle_change", to = "dormant" }', extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    async with db.transaction() as session:
        await change_lifecycle(session, customer, LifecycleStage.DORMANT, actor="test")
        await change_lifecycle(session, other, LifecycleStage.CHURNED, actor="test")
    await _restamp_history(db, clock.advance(minutes=1))
    await runner.tick()
    [row] = await sends(db)
    assert row.customer_id == customer and row.occurrence.startswith("lifecycle:")
    assert row.status == "queued"


async def test_tier_change_to_vip(db: Database) -> None:
    await add_tier(db, "vip")
    await add_tier(db, "gold")
    customer = await add_customer(db, **email_customer("a@example.cn"))
    other = await add_customer(db, "李娜", **email_customer("b@example.cn"))
    config = config_from(campaign("vip-welcome", '{ kind = "tier_change", to = "vip" }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    async with db.transaction() as session:
        await update_customer(session, customer, {"tier_code": "vip"}, actor="test", region="CN")
        await update_customer(session, other, {"tier_code": "gold"}, actor="test", region="CN")
    await _restamp_history(db, clock.advance(minutes=1))
    await runner.tick()
    [row] = await sends(db)
    assert row.customer_id == customer and row.occurrence.startswith("tier:")


async def _restamp_history(db: Database, at: object) -> None:
    """Give the audit and lifecycle rows written just now the test clock's time."""
    from crm_core.models import AuditLog, LifecycleTransition

    async with db.transaction() as session:
        await session.execute(update(AuditLog).values(at=at))
        await session.execute(update(LifecycleTransition)
                              .where(LifecycleTransition.from_stage.is_not(None)).values(at=at))
