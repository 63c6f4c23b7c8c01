"""A small world whose every report figure was computed by hand (see the test modules).

Business zone Asia/Shanghai (UTC+8); "today" is 2026-05-20, now 14:00 local. Customers
c1–c5, agents A1 (online), A2 (away), A3 (inactive), tickets t1–t6, interactions, CSAT,
orders o1–o9 with payments, opportunities, contracts and lifecycle transitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from crm_core.db import Database
from crm_core.models import (
    Agent,
    AgentRole,
    Availability,
    CareTask,
    Channel,
    Conversation,
    Customer,
    CustomerCategory,
    CustomerTier,
    Direction,
    FeedbackResponse,
    Interaction,
    LifecycleStage,
    LifecycleTransition,
    Ticket,
    TicketStatus,
)
from crm_core.services import sales
from crm_core.services.analytics.base import Period

ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 5, 20, 14, 0, tzinfo=ZONE).astimezone(UTC)
TODAY = date(2026, 5, 20)
MAY = Period(date(2026, 5, 1), date(2026, 5, 31), "Asia/Shanghai")
APRIL_MAY = Period(date(2026, 4, 1), date(2026, 5, 31), "Asia/Shanghai")
DAY = Period(TODAY, TODAY, "Asia/Shanghai")
NEXT_30 = Period(date(2026, 5, 21), date(2026, 6, 19), "Asia/Shanghai")


def local(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A 2026 moment in Shanghai, as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


@dataclass
class World:
    """Ids of what :func:`seed` made."""

    agents: dict[str, int] = field(default_factory=dict)
    customers: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)


async def seed(db: Database, *, password_hash: str = "!") -> World:
    """Write the hand-computed world."""
    world = World()
    async with db.transaction() as session:
        session.add_all([CustomerTier(code="gold", name="Gold", rank=2),
                         CustomerTier(code="silver", name="Silver", rank=1),
                         CustomerCategory(code="retail", name="Retail"),
                         CustomerCategory(code="wholesale", name="Wholesale")])
        agents = {
            "A1": Agent(login="a1", display_name="Alice", password_hash=password_hash,
                        availability=Availability.ONLINE, role=AgentRole.AGENT),
            "A2": Agent(login="a2", display_name="Bob", password_hash=password_hash,
                        availability=Availability.AWAY, role=AgentRole.AGENT),
            "A3": Agent(login="a3", display_name="Gone", password_hash=password_hash,
                        availability=Availability.ONLINE, active=False),
        }
        session.add_all(agents.values())
        await session.flush()
        world.agents = {k: a.id for k, a in agents.items()}
        a1, a2 = world.agents["A1"], world.agents["A2"]
        specs = {
            "c1": ("张伟", "retail", "tech", "广东", "gold", a1, local(3, 10), "active"),
            "c2": ("李娜", "retail", "finance", "北京", None, a1, local(3, 20), "active"),
            "c3": ("王芳", "wholesale", "tech", "广东", "gold", a2, local(5, 3), "churned"),
            "c4": ("赵磊", None, None, None, None, None, local(5, 10), "churned"),
            "c5": ("陈静", "retail", "tech", "上海", "silver", a2, local(5, 12), "active"),
        }
        for key, (name, category, industry, province, tier, owner, created, stage) in \
                specs.items():
            customer = Customer(display_name=name, name_key=name, category_code=category,
                                industry=industry, province=province, tier_code=tier,
                                owner_agent_id=owner, created_at=created, updated_at=created,
                                lifecycle_stage=LifecycleStage(stage))
            session.add(customer)
            await session.flush()
            world.customers[key] = customer.id
        c = world.customers

        conversations = {}
        for key, customer, channel in (("v1", "c1", Channel.EMAIL), ("v2", "c2", Channel.EMAIL),
                                       ("v3", "c3", Channel.TELEGRAM),
                                       ("v4", "c5", Channel.WEBCHAT)):
            conversation = Conversation(customer_id=c[customer], channel=channel,
                                        assignee_id=a1 if customer in ("c1", "c2") else a2)
            session.add(conversation)
            await session.flush()
            conversations[key] = conversation.id
        inbound, outbound = Direction.INBOUND, Direction.OUTBOUND
        messages = [
            ("c1", "v1", Channel.EMAIL, inbound, None, local(5, 20, 9, 0)),
            ("c1", "v1", Channel.EMAIL, inbound, None, local(5, 20, 9, 5)),
            ("c2", "v2", Channel.EMAIL, inbound, None, local(5, 20, 10, 0)),
            ("c3", "v3", Channel.TELEGRAM, inbound, None, local(5, 20, 11, 0)),
            ("c3", "v3", Channel.TELEGRAM, inbound, None, local(5, 20, 11, 10)),
            ("c5", "v4", Channel.WEBCHAT, inbound, None, local(5, 20, 12, 0)),
            ("c1", "v1", Channel.EMAIL, outbound, a1, local(5, 20, 9, 10)),
            ("c1", "v1", Channel.EMAIL, outbound, a1, local(5, 20, 9, 20)),
            ("c2", "v2", Channel.EMAIL, outbound, a1, local(5, 20, 10, 30)),
            ("c3", "v3", Channel.TELEGRAM, outbound, a2, local(5, 20, 11, 30)),
            ("c1", "v1", Channel.EMAIL, inbound, None, local(5, 19, 23, 30)),
            ("c1", "v1", Channel.EMAIL, outbound, a1, local(5, 5, 10, 0)),
            ("c2", "v2", Channel.TELEGRAM, inbound, None, local(4, 28, 10, 0)),
        ]
        for customer, conversation, channel, direction, agent, at in messages:
            session.add(Interaction(customer_id=c[customer],
                                    conversation_id=conversations[conversation],
                                    channel=channel, direction=direction, agent_id=agent,
                                    text="…", occurred_at=at, created_at=at))

        def ticket(number: str, customer: str, assignee: int, created: datetime,
                   status: TicketStatus, **times: datetime | None) -> Ticket:
            return Ticket(number=number, subject=number, customer_id=c[customer],
                          assignee_id=assignee, created_at=created, updated_at=created,
                          status=status, **times)

        tickets = {
            "t1": ticket("T-1", "c1", a1, local(5, 20, 9), TicketStatus.RESOLVED,
                         first_responded_at=local(5, 20, 9, 10),
                         first_response_due_at=local(5, 20, 9, 30),
                         resolved_at=local(5, 20, 11), resolution_due_at=local(5, 20, 17)),
            "t2": ticket("T-2", "c2", a1, local(5, 20, 10), TicketStatus.OPEN,
                         first_responded_at=local(5, 20, 10, 30),
                         first_response_due_at=local(5, 20, 10, 15),
                         resolution_due_at=local(5, 20, 12)),
            "t3": ticket("T-3", "c3", a2, local(5, 20, 11), TicketStatus.NEW,
                         first_response_due_at=local(5, 20, 11, 30)),
            "t4": ticket("T-4", "c3", a2, local(5, 19, 8), TicketStatus.RESOLVED,
                         first_responded_at=local(5, 19, 8, 20),
                         resolved_at=local(5, 20, 8), resolution_due_at=local(5, 19, 20)),
            "t5": ticket("T-5", "c5", a1, local(5, 20, 12), TicketStatus.PENDING,
                         first_responded_at=local(5, 20, 12, 50)),
            "t6": ticket("T-6", "c1", a1, local(5, 1, 10), TicketStatus.CLOSED,
                         first_responded_at=local(5, 1, 10, 20),
                         resolved_at=local(5, 2, 10)),
        }
        session.add_all(tickets.values())
        await session.flush()
        for customer, ticket_key, score, at in (("c1", "t1", 5, local(5, 20, 11, 30)),
                                                ("c3", "t4", 3, local(5, 20, 9)),
                                                ("c2", None, 4, local(5, 20, 13)),
                                                ("c1", "t6", 2, local(5, 10)),
                                                ("c2", None, 4, local(4, 12))):
            session.add(FeedbackResponse(
                customer_id=c[customer], kind="csat", score=score, channel=Channel.EMAIL,
                ticket_id=tickets[ticket_key].id if ticket_key else None, created_at=at,
                updated_at=at))
        session.add(FeedbackResponse(customer_id=c["c1"], kind="nps", score=1,
                                     channel=Channel.EMAIL, created_at=local(5, 20, 9),
                                     updated_at=local(5, 20, 9)))
        session.add_all([
            CareTask(customer_id=c["c1"], assignee_id=a1, title="call", due_at=local(5, 15),
                     status="done", completed_at=local(5, 15, 11)),
            CareTask(customer_id=c["c3"], assignee_id=a2, title="call", due_at=local(5, 25)),
        ])
        for customer, from_stage, to_stage, reason, at in (
                ("c2", LifecycleStage.ACTIVE, LifecycleStage.CHURNED, "service", local(4, 20)),
                ("c2", LifecycleStage.CHURNED, LifecycleStage.ACTIVE, None, local(5, 3)),
                ("c4", LifecycleStage.LEAD, LifecycleStage.CHURNED, "price", local(5, 14)),
                ("c3", LifecycleStage.ACTIVE, LifecycleStage.CHURNED, None, local(5, 16))):
            session.add(LifecycleTransition(customer_id=c[customer], from_stage=from_stage,
                                            to_stage=to_stage, reason=reason, actor="test",
                                            at=at))

        # -- sales ---------------------------------------------------------------------
        for code, name, probability, position, outcome in (
                ("lead", "Lead", 0.1, 1, "open"), ("proposal", "Proposal", 0.5, 2, "open"),
                ("negotiation", "Negotiation", 0.8, 3, "open"), ("won", "Won", 1.0, 4, "won"),
                ("lost", "Lost", 0.0, 5, "lost")):
            await sales.save_stage(session, code=code, name=name, probability=probability,
                                   position=position, outcome=outcome)
        for customer, stage, amount, close, probability in (
                ("c1", "lead", 10000, date(2026, 6, 1), None),
                ("c2", "proposal", 4000, date(2026, 6, 10), 0.25),
                ("c5", "negotiation", 5000, date(2026, 5, 25), None),
                ("c3", "negotiation", 9999, date(2026, 7, 15), None)):
            await sales.create_opportunity(
                session, customer_id=c[customer], title=f"deal {customer}", stage_code=stage,
                amount=amount, now=local(5, 1), actor="test", probability=probability,
                expected_close_on=close, owner_id=a1)
        won = await sales.create_opportunity(session, customer_id=c["c1"], title="won deal",
                                             stage_code="lead", amount=3000, now=local(4, 1),
                                             actor="test")
        await sales.move_opportunity(session, won.id, "won", now=local(5, 6), actor="test")
        lost = await sales.create_opportunity(session, customer_id=c["c2"], title="lost deal",
                                              stage_code="lead", amount=2000, now=local(4, 1),
                                              actor="test")
        await sales.move_opportunity(session, lost.id, "lost", now=local(5, 7), actor="test",
                                     lost_reason="budget")
        for agent, customer, at in ((a1, "c1", local(5, 4)), (a1, "c2", local(5, 9)),
                                    (a2, "c3", local(5, 11))):
            await sales.record_follow_up(session, customer_id=c[customer], agent_id=agent,
                                         now=at, attitude="positive",
                                         next_contact_on=TODAY if customer == "c1" else None)

        def line(price: object, quantity: object = 1) -> sales.LineInput:
            return sales.LineInput("Widget", quantity, price)

        orders = [
            ("o1", "c1", local(4, 10), [line(1000)], "CNY", None),
            ("o2", "c1", local(5, 5), [line(250, 2)], "CNY", None),
            ("o3", "c2", local(5, 8), [line(2000)], "CNY", None),
            ("o4", "c3", local(5, 15), [line(300)], "CNY", date(2026, 5, 18)),
            ("o5", "c5", local(5, 18), [line(500), line(100, 3)], "CNY", None),
            ("o6", "c2", local(4, 20), [line(2500)], "CNY", None),
            ("o7", "c5", local(5, 19), [line(700)], "CNY", None),
            ("o8", "c3", local(5, 2), [line(100)], "USD", None),
            ("o9", "c1", local(5, 20, 9), [line(1200)], "CNY", date(2026, 5, 30)),
        ]
        for key, customer, at, lines, currency, due in orders:
            order = await sales.create_order(session, customer_id=c[customer], lines=lines,
                                             now=at, actor="test", currency=currency,
                                             due_on=due)
            world.orders[key] = order.id
        o = world.orders
        await sales.cancel_order(session, o["o7"], now=local(5, 19, 12), actor="test")
        for key, amount, at in (("o1", 1000, local(4, 11)), ("o6", 2500, local(4, 21)),
                                ("o4", 100, local(5, 16)), ("o5", 800, local(5, 18))):
            await sales.record_payment(session, o[key], amount, now=at, actor="test")

        old = await sales.create_contract(session, customer_id=c["c1"], title="2025",
                                          start_on=date(2025, 2, 1), end_on=date(2026, 1, 31),
                                          amount=6000, now=local(1, 1), actor="test")
        await sales.create_contract(session, customer_id=c["c1"], title="2026",
                                    start_on=date(2026, 2, 1), end_on=date(2026, 6, 5),
                                    amount=6000, now=local(2, 1), actor="test",
                                    renewed_from_id=old.id)
        await sales.create_contract(session, customer_id=c["c2"], title="c2",
                                    start_on=date(2025, 8, 2), end_on=date(2026, 8, 1),
                                    amount=5000, now=local(1, 1), actor="test")
        k3 = await sales.create_contract(session, customer_id=c["c3"], title="k3",
                                         start_on=date(2025, 5, 1), end_on=date(2026, 4, 30),
                                         amount=1000, now=local(1, 1), actor="test")
        await sales.create_contract(session, customer_id=c["c3"], title="k5",
                                    start_on=date(2026, 5, 1), end_on=date(2026, 6, 15),
                                    amount=2000, now=local(5, 1), actor="test",
                                    kind="subscription", renewed_from_id=k3.id)
        await sales.create_contract(session, customer_id=c["c5"], title="k4",
                                    start_on=date(2025, 4, 1), end_on=date(2026, 3, 31),
                                    amount=1000, now=local(1, 1), actor="test")
        await sales.end_contracts(session, today=TODAY)
    return world

