"""The weekly report: due from Monday 09:00 local, queued once per week per supervisor
through the outbox, with last week's figures."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from contact_center.scheduler import WeeklyReport
from crm_core.db import Database
from crm_core.models import AgentRole, Channel, OutboxMessage, ReportDelivery
from crm_core.services.agents import create_agent
from tests.analytics_support import seed
from tests.campaign_support import Clock, config_from, scheduler

ZONE = ZoneInfo("Asia/Shanghai")


async def test_weekly_report_goes_to_supervisors_once(db: Database) -> None:
    await seed(db)
    async with db.transaction() as session:
        for login, role, email in (("lead", AgentRole.SUPERVISOR, "lead@shop.example"),
                                   ("mute", AgentRole.SUPERVISOR, None),
                                   ("root", AgentRole.ADMIN, "root@shop.example")):
            await create_agent(session, login=login, display_name=login, password="x" * 12,
                               actor="test", role=role, email=email)
    clock = Clock(datetime(2026, 5, 25, 8, 30, tzinfo=ZONE).astimezone(UTC))  # Monday
    runner = scheduler(db, config_from(""), clock,
                       weekly_report=WeeklyReport(console_url="https://cc.example"))
    assert (await runner.tick()).reports == 0           # before 09:00
    clock.set(datetime(2026, 5, 25, 9, 30, tzinfo=ZONE).astimezone(UTC))
    assert (await runner.tick()).reports == 1           # the supervisor with an address
    assert (await runner.tick()).reports == 0           # once a week
    clock.set(datetime(2026, 5, 28, 9, 30, tzinfo=ZONE).astimezone(UTC))
    assert (await runner.tick()).reports == 0
    async with db.sessions() as session:
        [message] = await session.scalars(select(OutboxMessage))
        [delivery] = await session.scalars(select(ReportDelivery))
    assert message.channel == Channel.EMAIL and message.customer_id is None
    assert message.payload["to"]["email"] == "lead@shop.example"
    assert delivery.key == "weekly:2026-W22" and delivery.recipients == ["lead@shop.example"]
    text = message.payload["text"]
    assert message.payload["subject"] == "周报 Weekly report 2026-05-18 – 2026-05-24"
    assert "收入 Revenue: 2000.0" in text          # o5 800 (18 May) + o9 1200 (20 May)
    assert "订单 Orders: 2" in text
    assert "流失客户 Churned customers: 0" in text  # the churns were before 18 May
    assert "https://cc.example/console/reports/dashboard?from=2026-05-18&to=2026-05-24" in text
