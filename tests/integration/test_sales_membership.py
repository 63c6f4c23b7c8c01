"""Sales flow and membership: orders earn points, levels follow the rules and move the
customer's tier (so ``tier_change`` campaigns fire), points are redeemed oldest first and
expire; contracts feed the ``contract_end`` campaign trigger; follow-up reminders."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from crm_core.db import Database
from crm_core.errors import StateError, ValidationError
from crm_core.models import (
    AuditLog,
    Customer,
    MemberLevel,
    MemberLevelChange,
    Membership,
    PointsEntry,
)
from crm_core.services import membership, sales
from tests.campaign_support import (
    Clock,
    add_customer,
    add_tier,
    campaign,
    config_from,
    email_customer,
    scheduler,
    sends,
    utc,
)


async def _levels(db: Database) -> None:
    await add_tier(db, "silver")
    await add_tier(db, "gold")
    async with db.transaction() as session:
        session.add_all([
            MemberLevel(code="silver", name="Silver", rank=1, min_spend=Decimal("1000"),
                        tier_code="silver"),
            MemberLevel(code="gold", name="Gold", rank=2, min_spend=Decimal("5000"),
                        min_points=4000, earn_rate=2.0, tier_code="gold"),
        ])


def _line(price: object, quantity: object = 1) -> sales.LineInput:
    return sales.LineInput("会员卡 Card", quantity, price)


async def test_orders_earn_points_and_move_levels(db: Database) -> None:
    await _levels(db)
    customer = await add_customer(db, **email_customer("vip@example.cn"))
    t0 = utc(2026, 5, 4, 2, 0)
    async with db.transaction() as session:
        order = await sales.create_order(session, customer_id=customer,
                                         lines=[_line(200, 3)], now=t0, actor="test")
        assert order.amount == Decimal("600.00") and order.number == f"SO-{order.id:06d}"
        member = await session.get(Membership, customer)
        assert (member.points_balance, member.level_code) == (600, None)
        await sales.create_order(session, customer_id=customer, lines=[_line(500)],
                                 now=t0 + timedelta(days=10), actor="test")
    async with db.sessions() as session:
        member = await session.get(Membership, customer)
        assert (member.points_balance, member.total_spend, member.level_code) == (
            1100, Decimal("1100.00"), "silver")
        row = await session.get(Customer, customer)
        assert (row.tier_code, row.lifetime_value) == ("silver", Decimal("1100.00"))
        [change] = await session.scalars(select(MemberLevelChange))
        assert (change.from_level, change.to_level) == (None, "silver")
        [entry] = await session.scalars(select(AuditLog).where(AuditLog.action == "member_level"))
        assert entry.after == {"tier_code": "silver", "member_level": "silver"}


async def test_points_redeem_oldest_first_and_expire(db: Database) -> None:
    customer = await add_customer(db)
    t0 = utc(2026, 1, 1, 2, 0)
    async with db.transaction() as session:
        await membership.earn_points(session, customer, spend=Decimal("600"), now=t0)
        await membership.earn_points(session, customer, spend=Decimal("500.90"),
                                     now=t0 + timedelta(days=10))
        with pytest.raises(StateError):
            await membership.redeem_points(session, customer, 5000, now=t0, actor="test")
        with pytest.raises(ValidationError):
            await membership.redeem_points(session, customer, 0, now=t0, actor="test")
        await membership.redeem_points(session, customer, 300, now=t0 + timedelta(days=20),
                                       actor="test", note="gift")
    async with db.transaction() as session:
        # The first 600 expire after a year: 300 of them were redeemed.
        expired = await membership.expire_points(session, now=t0 + timedelta(days=366))
        assert expired == 300
        assert await membership.expire_points(session, now=t0 + timedelta(days=366)) == 0
    async with db.sessions() as session:
        member = await session.get(Membership, customer)
        assert (member.points_balance, member.points_earned) == (500, 1100)
        kinds = [(e.kind, e.points) for e in await session.scalars(
            select(PointsEntry).order_by(PointsEntry.id))]
        assert kinds == [("earn", 600), ("earn", 500), ("redeem", -300), ("expire", -300)]


async def test_level_change_triggers_tier_change_campaign(db: Database) -> None:
    await _levels(db)
    customer = await add_customer(db, **email_customer("a@example.cn"))
    config = config_from(campaign("silver-welcome", '{ kind = "tier_change", to = "silver" }',
                                  extra='channels = ["email"]'))
    clock = Clock(utc(2026, 5, 4, 2, 0))
    runner = scheduler(db, config, clock)
    await runner.tick()
    async with db.transaction() as session:
        await sales.create_order(session, customer_id=customer, lines=[_line(1200)],
                                 now=clock.advance(minutes=1), actor="test")
    clock.advance(minutes=1)
    await runner.tick()
    [row] = await sends(db)
    assert row.customer_id == customer and row.occurrence.startswith("tier:")


async def test_contracts_feed_the_contract_end_trigger(db: Database) -> None:
    customer = await add_customer(db, **email_customer("zw@example.cn"))
    later = await add_customer(db, "李娜", **email_customer("ln@example.cn"))
    both = await add_customer(db, "王芳", custom_attributes={"contract_end": "2026-06-30"},
                              **email_customer("wf@example.cn"))
    async with db.transaction() as session:
        for who, end in ((customer, date(2026, 6, 30)), (later, date(2026, 9, 30)),
                         (both, date(2026, 6, 30))):
            await sales.create_contract(session, customer_id=who, title="年度服务",
                                        start_on=date(2025, 7, 1), end_on=end, amount=1000,
                                        now=utc(2025, 7, 1), actor="test")
    config = config_from(campaign(
        "renewal", '{ kind = "contract_end", days_before = 30, at = "09:30" }',
        extra='channels = ["email"]'))
    runner = scheduler(db, config, Clock(utc(2026, 5, 31, 0, 0)))
    await runner.tick()
    rows = await sends(db)
    # One send per customer and end date, whether the date came from a contract, the
    # customer attribute, or both.
    assert sorted((r.customer_id, r.occurrence) for r in rows) == [
        (customer, "contract_end:2026-06-30"), (both, "contract_end:2026-06-30")]
    assert rows[0].due_at == utc(2026, 5, 31, 1, 30)


async def test_payments_receivables_and_cancellation(db: Database) -> None:
    customer = await add_customer(db)
    now = utc(2026, 5, 4, 2, 0)
    async with db.transaction() as session:
        order = await sales.create_order(session, customer_id=customer,
                                         lines=[_line("99.50", 2)], now=now, actor="test",
                                         due_on=date(2026, 5, 10))
        with pytest.raises(ValidationError):
            await sales.record_payment(session, order.id, 500, now=now, actor="test")
        await sales.record_payment(session, order.id, 100, now=now, actor="test",
                                   method="alipay")
        [open_item] = await sales.receivables(session, today=date(2026, 5, 11))
        assert (open_item.balance, open_item.overdue) == (Decimal("99.00"), True)
        with pytest.raises(StateError):
            await sales.cancel_order(session, order.id, now=now, actor="test")
        other = await sales.create_order(session, customer_id=customer, lines=[_line(10)],
                                         now=now, actor="test")
        await sales.cancel_order(session, other.id, now=now, actor="test")
        assert (await session.get(Customer, customer)).lifetime_value == Decimal("199.00")
        with pytest.raises(ValidationError):
            await sales.create_order(session, customer_id=customer, lines=[], now=now,
                                     actor="test")


async def test_follow_up_reminders(db: Database) -> None:
    customer = await add_customer(db)
    now = utc(2026, 5, 4, 2, 0)
    async with db.transaction() as session:
        await sales.save_stage(session, code="lead", name="Lead", probability=0.1)
        deal = await sales.create_opportunity(session, customer_id=customer, title="ERP",
                                              stage_code="lead", amount=1000, now=now,
                                              actor="test")
        await sales.record_follow_up(session, customer_id=customer, agent_id=None, now=now,
                                     attitude="hesitant", next_contact_on=date(2026, 5, 6),
                                     opportunity_id=deal.id)
        with pytest.raises(ValidationError):
            await sales.record_follow_up(session, customer_id=customer, agent_id=None,
                                         now=now, attitude="angry")
        assert await sales.due_follow_ups(session, today=date(2026, 5, 5)) == []
        [(due, name)] = await sales.due_follow_ups(session, today=date(2026, 5, 6))
        assert (due.attitude, name) == ("hesitant", "张伟")
        # The next contact settles the reminder.
        await sales.record_follow_up(session, customer_id=customer, agent_id=None,
                                     now=now + timedelta(days=2), attitude="positive")
        assert await sales.due_follow_ups(session, today=date(2026, 5, 6)) == []
