"""Demo sales, membership and analytics data: pipeline stages and deals, follow-ups (some
due today), orders with payments, contracts (some up for renewal), member levels and
points, CSAT answers and churn with reasons — so every report and chart of the console
shows something under ``make run``. Deterministic for a seed; written through the
services (points, lifetime value and levels follow the orders)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    Agent,
    AgentRole,
    CareTask,
    Channel,
    Customer,
    FeedbackResponse,
    LifecycleStage,
    LifecycleTransition,
    MemberLevel,
    Ticket,
)
from crm_core.services import membership, sales

ACTOR = "demo"
STAGES = (  # code, English, Chinese, probability, outcome
    ("lead", "Lead", "线索", 0.1, "open"),
    ("qualified", "Qualified", "已确认需求", 0.25, "open"),
    ("proposal", "Proposal", "方案报价", 0.5, "open"),
    ("negotiation", "Negotiation", "商务谈判", 0.75, "open"),
    ("won", "Won", "赢单", 1.0, "won"),
    ("lost", "Lost", "输单", 0.0, "lost"),
)
PRODUCTS = (
    ("云客服坐席年费 Cloud seat (year)", 3600), ("智能质检模块 QA module", 8800),
    ("呼叫中心话费包 Call minutes pack", 500), ("实施服务 Implementation", 12000),
    ("培训课程 Training", 1500), ("短信包 SMS pack", 300), ("硬件耳麦 Headset", 260),
)
ATTITUDES = ("positive", "positive", "neutral", "hesitant", "negative")
CHURN_REASONS = ("价格 price", "服务体验 service", "转向竞争对手 competitor", None)
NOTES = ("客户对报价有疑问，下周再联系。", "已发送方案，等待反馈。", "Asked for a demo next week.",
         "决策人出差，月底再跟进。", "Happy with the trial.")


@dataclass
class SalesSummary:
    """What the demo sales loader wrote."""

    orders: int = 0
    opportunities: int = 0
    follow_ups: int = 0
    contracts: int = 0
    feedback: int = 0


async def write_sales_demo(session: AsyncSession, customers: list[Customer],
                           agents: list[Agent], tickets: list[Ticket], *, now: datetime,
                           seed: int) -> SalesSummary:
    """Write the demo's sales and analytics data for ``customers`` (in the caller's
    transaction)."""
    rng = random.Random(seed + 9)
    summary = SalesSummary()
    today = now.date()
    sellers = [a for a in agents if a.role == AgentRole.AGENT] or agents
    for code, name, name_zh, probability, outcome in STAGES:
        await sales.save_stage(session, code=code, name=name, name_zh=name_zh,
                               probability=probability, position=STAGES.index(
                                   (code, name, name_zh, probability, outcome)) + 1,
                               outcome=outcome)
    levels = [
        MemberLevel(code="silver", name="Silver member", name_zh="银卡会员", rank=1,
                    min_spend=Decimal("15000"), earn_rate=1.0),
        MemberLevel(code="gold", name="Gold member", name_zh="金卡会员", rank=2,
                    min_spend=Decimal("40000"), min_points=60000, earn_rate=1.5),
        MemberLevel(code="diamond", name="Diamond member", name_zh="钻石会员", rank=3,
                    min_spend=Decimal("90000"), earn_rate=2.0, tier_code="vip"),
    ]
    for level in levels:
        if await session.get(MemberLevel, level.code) is None:
            session.add(level)
    await session.flush()
    buyers = rng.sample(customers, k=min(len(customers), max(1, len(customers) * 2 // 5)))
    for customer in buyers:
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            ordered = now - timedelta(days=rng.randint(0, 360), hours=rng.randint(0, 20))
            lines = [sales.LineInput(*_product(rng)) for _ in range(rng.randint(1, 3))]
            order = await sales.create_order(
                session, customer_id=customer.id, lines=lines, now=ordered, actor=ACTOR,
                ordered_at=ordered, agent_id=customer.owner_agent_id,
                due_on=(ordered + timedelta(days=30)).date())
            summary.orders += 1
            roll = rng.random()
            if roll < 0.8:
                await sales.record_payment(session, order.id, order.amount, actor=ACTOR,
                                           now=ordered, paid_at=ordered + timedelta(days=2),
                                           method=rng.choice(("alipay", "wechat", "bank")))
            elif roll < 0.9:
                await sales.record_payment(session, order.id, order.amount / 2, actor=ACTOR,
                                           now=ordered, paid_at=ordered + timedelta(days=5),
                                           method="bank")
        if rng.random() < 0.2:
            member = await membership.membership_of(session, customer.id, now=now)
            if member.points_balance > 200:
                await membership.redeem_points(session, customer.id, member.points_balance // 4,
                                               now=now - timedelta(days=rng.randint(0, 30)),
                                               actor=ACTOR, note="兑换礼品 gift")
    for index in range(45):
        customer = rng.choice(customers)
        stage = rng.choice(("lead", "lead", "qualified", "proposal", "proposal",
                            "negotiation", "won", "lost"))
        created = now - timedelta(days=rng.randint(5, 90))
        deal = await sales.create_opportunity(
            session, customer_id=customer.id, title=f"{_product(rng)[0]} #{index + 1}",
            stage_code="lead", amount=rng.randrange(2000, 90000, 500), now=created,
            actor=ACTOR, owner_id=rng.choice(sellers).id,
            expected_close_on=today + timedelta(days=rng.randint(-5, 75)),
            source=rng.choice(("website", "referral", "trade_show")))
        if stage != "lead":
            await sales.move_opportunity(
                session, deal.id, stage, now=created + timedelta(days=rng.randint(1, 4)),
                actor=ACTOR, lost_reason="预算不足 budget" if stage == "lost" else None)
        summary.opportunities += 1
        if rng.random() < 0.7:
            at = now - timedelta(days=rng.randint(0, 10), hours=rng.randint(1, 8))
            next_day = (at + timedelta(days=rng.randint(1, 14))).date()
            await sales.record_follow_up(
                session, customer_id=customer.id, agent_id=deal.owner_id, now=at,
                attitude=rng.choice(ATTITUDES), note=rng.choice(NOTES),
                next_contact_on=next_day if rng.random() < 0.8 else None,
                opportunity_id=deal.id, channel=rng.choice(("phone", "wechat", "email")))
            summary.follow_ups += 1
    for index, customer in enumerate(rng.sample(customers, k=min(len(customers), 30))):
        start = today - timedelta(days=rng.randint(200, 700))
        end = start + timedelta(days=365)
        amount = rng.randrange(3000, 60000, 1000)
        contract = await sales.create_contract(
            session, customer_id=customer.id, title=f"年度服务合同 Annual service #{index + 1}",
            start_on=start, end_on=end, amount=amount, now=now, actor=ACTOR,
            kind="subscription" if index % 3 == 0 else "contract")
        summary.contracts += 1
        if end < today and rng.random() < 0.65:
            renewed_end = end + timedelta(days=365)
            if renewed_end < today:  # a second year over; keep one term running near now
                renewed_end = today + timedelta(days=rng.randint(3, 60))
            await sales.create_contract(
                session, customer_id=customer.id, title=f"续约 Renewal #{index + 1}",
                start_on=end + timedelta(days=1), end_on=renewed_end, amount=amount,
                now=now, actor=ACTOR, renewed_from_id=contract.id)
            summary.contracts += 1
    await sales.end_contracts(session, today=today)
    summary.feedback = _feedback(session, rng, customers, tickets, now)
    _churn(session, rng, customers, now)
    for ticket in tickets[:8]:
        if ticket.assignee_id is not None:
            done = now - timedelta(days=rng.randint(0, 20))
            session.add(CareTask(customer_id=ticket.customer_id, assignee_id=ticket.assignee_id,
                                 ticket_id=ticket.id, title="回访 Follow-up call", due_at=done,
                                 status="done", outcome="reached", completed_at=done,
                                 completed_by=ACTOR, created_at=done, updated_at=done))
    await session.flush()
    return summary


def _product(rng: random.Random) -> tuple[str, int, int]:
    name, price = rng.choice(PRODUCTS)
    return name, rng.randint(1, 3), price


def _feedback(session: AsyncSession, rng: random.Random, customers: list[Customer],
              tickets: list[Ticket], now: datetime) -> int:
    count = 0
    for day in range(0, 180, 2):
        for _ in range(rng.randint(0, 2)):
            ticket = rng.choice(tickets) if tickets and rng.random() < 0.7 else None
            at = now - timedelta(days=day, hours=rng.randint(0, 10))
            session.add(FeedbackResponse(
                customer_id=ticket.customer_id if ticket else rng.choice(customers).id,
                ticket_id=ticket.id if ticket else None, kind="csat",
                score=rng.choice((5, 5, 5, 4, 4, 4, 3, 2, 1)),
                channel=rng.choice((Channel.EMAIL, Channel.TELEGRAM, Channel.WEBCHAT)),
                created_at=at, updated_at=at))
            count += 1
    return count


def _churn(session: AsyncSession, rng: random.Random, customers: list[Customer],
           now: datetime) -> None:
    """Churn with reasons over the last six months for a few active customers."""
    active = [c for c in customers if c.lifecycle_stage == LifecycleStage.ACTIVE]
    for customer in rng.sample(active, k=min(len(active), 14)):
        at = now - timedelta(days=rng.randint(1, 180))
        session.add(LifecycleTransition(customer_id=customer.id,
                                        from_stage=LifecycleStage.ACTIVE,
                                        to_stage=LifecycleStage.CHURNED,
                                        reason=rng.choice(CHURN_REASONS), actor=ACTOR, at=at))
        customer.lifecycle_stage = LifecycleStage.CHURNED

