"""Reports read from the daily roll-ups give the figures the live queries give, on the
hand-computed world of ``tests.analytics_support``, on SQLite and PostgreSQL; refreshes
are idempotent, incremental ones equal a rebuild, and late data is picked up."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from crm_core.db import Database
from crm_core.models import (
    Channel,
    Direction,
    FeedbackResponse,
    Interaction,
    Order,
    RollupAgentConversation,
    RollupAgentDay,
    RollupChannelDay,
    RollupOrderDay,
    RollupState,
    RollupTicketDuration,
    Ticket,
)
from crm_core.services.analytics import agents
from crm_core.services.analytics.base import Period
from crm_core.services.analytics.registry import ALL, Filters, build
from crm_core.services.analytics.rollups import refresh_rollups
from tests.analytics_support import APRIL_MAY, DAY, MAY, NOW, TODAY, World, local, seed
from tests.campaign_support import Clock, config_from, scheduler

ZONE = "Asia/Shanghai"
YEAR = Period.ending(TODAY, 365, ZONE)
EARLY_MAY = Period(date(2026, 5, 1), date(2026, 5, 10), ZONE)
PERIODS = {"day": DAY, "may": MAY, "april_may": APRIL_MAY, "year": YEAR, "early_may": EARLY_MAY}
TABLES = (RollupChannelDay, RollupAgentDay, RollupOrderDay, RollupAgentConversation,
          RollupTicketDuration)


@pytest.fixture
async def world(db: Database) -> World:
    return await seed(db)


@pytest.fixture(params=["live_conversations", "spans"])
def spans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Count conversations handled from the reply spans for every period, or never."""
    monkeypatch.setattr(agents, "SPANS_FROM_DAYS", 1 if request.param == "spans" else 10_000)
    return str(request.param)


async def figures(db: Database) -> dict[tuple[str, str], dict[str, list[list[Any]]]]:
    """Every report over every test period."""
    found = {}
    for name in ALL:
        for key, period in PERIODS.items():
            async with db.sessions() as session:
                report = await build(name, session, period, Filters(now=NOW))
            found[(name, key)] = {k: t.rows for k, t in report.tables.items()}
    return found


async def refresh(db: Database, **options: Any) -> Any:
    async with db.transaction() as session:
        return await refresh_rollups(session, zone=ZONE, **{"now": NOW, **options})


async def rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every roll-up row, in a stable order."""
    found = {}
    async with db.sessions() as session:
        for model in TABLES:
            columns = list(model.__table__.columns)
            found[model.__tablename__] = sorted(
                tuple(str(v) for v in row) for row in await session.execute(select(*columns)))
    return found


async def test_reports_from_rollups_equal_live_reports(db: Database, world: World,
                                                       spans: str) -> None:
    live = await figures(db)
    result = await refresh(db)
    assert result.full and result.through == TODAY
    assert await figures(db) == live
    # The hand-computed figures still hold (see test_analytics): May, Alice and Bob.
    async with db.sessions() as session:
        report = await agents.agent_performance(session, MAY)
    by_name = {r["agent"]: r for r in report.tables["agents"].as_dicts()}
    assert (by_name["Alice"]["conversations"], by_name["Alice"]["replies"]) == (2, 4)
    assert by_name["Alice"]["first_response_p50_min"] == 25.0
    assert (by_name["Bob"]["resolution_p50_min"], by_name["Bob"]["csat_average"]) == (1440.0, 3.0)


async def test_rollups_hold_closed_days_only(db: Database, world: World) -> None:
    await refresh(db)
    async with db.sessions() as session:
        days = set(await session.scalars(select(RollupChannelDay.day).distinct()))
        state = await session.get(RollupState, "analytics")
    assert state is not None and state.through == TODAY
    # Interactions on 28 Apr, 5 May and 19 May (23:30 local); today's are read live.
    assert days == {date(2026, 4, 28), date(2026, 5, 5), date(2026, 5, 19)}


async def test_refresh_twice_gives_the_same_rows(db: Database, world: World) -> None:
    await refresh(db)
    first = await rows(db)
    again = await refresh(db)
    assert not again.full and again.days == 0
    assert await rows(db) == first
    await refresh(db, rebuild=True)
    assert await rows(db) == first


async def test_late_data_and_closed_days_are_picked_up(db: Database, world: World,
                                                       spans: str) -> None:
    await refresh(db)
    later = NOW + timedelta(hours=1)
    async with db.transaction() as session:
        interaction = await session.scalar(select(Interaction).where(
            Interaction.direction == Direction.OUTBOUND).order_by(Interaction.id).limit(1))
        assert interaction is not None
        # A reply of 5 May arriving late, a reassigned ticket, a changed CSAT score, an
        # order of 8 May cancelled.
        session.add(Interaction(customer_id=interaction.customer_id,
                                conversation_id=interaction.conversation_id,
                                channel=Channel.PHONE, direction=Direction.OUTBOUND,
                                agent_id=interaction.agent_id, text="late",
                                occurred_at=local(5, 5, 15), created_at=later))
        t6 = await session.scalar(select(Ticket).where(Ticket.number == "T-6"))
        t4 = await session.scalar(select(Ticket).where(Ticket.number == "T-4"))
        assert t6 is not None and t4 is not None
        await session.execute(update(Ticket).where(Ticket.id == t6.id)
                              .values(assignee_id=t4.assignee_id, updated_at=later))
        await session.execute(update(FeedbackResponse).where(FeedbackResponse.ticket_id == t4.id)
                              .values(score=1, updated_at=later))
        await session.execute(update(Order).where(Order.id == world.orders["o3"])
                              .values(status="cancelled", updated_at=later))
    stale = await figures(db)
    # The next refresh, the next day: today closes, the late rows are looked at again.
    tomorrow = NOW + timedelta(days=1)
    result = await refresh(db, now=tomorrow)
    assert not result.full and result.through == TODAY + timedelta(days=1)
    assert result.tickets >= 1 and result.conversations >= 1
    incremental = await rows(db)
    fresh = await figures(db)
    assert fresh != stale
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM rollup_state"))
    assert await figures(db) == fresh          # without roll-ups: the live figures
    await refresh(db, now=tomorrow)
    assert await rows(db) == incremental       # a rebuild gives the same rows
    phone = {r[0]: r[1] for r in fresh[("channels", "may")]["channels"]}
    assert phone["phone"] == 0                 # phone: one outbound reply, no inbound


async def test_second_refresh_waits_for_none(postgres_db: Database) -> None:
    """On PostgreSQL a refresh while another holds the lock is skipped, not doubled."""
    await seed(postgres_db)
    async with postgres_db.transaction() as holder:
        await holder.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": 0x43430013})
        result = await refresh(postgres_db)
        assert result.skipped
    assert not (await refresh(postgres_db)).skipped


async def test_scheduler_refreshes_the_rollups(db: Database, world: World) -> None:
    clock = Clock(NOW)
    ticker = scheduler(db, config_from(""), clock)
    await ticker.tick()
    async with db.sessions() as session:
        state = await session.get(RollupState, "analytics")
    assert state is not None and state.through == TODAY
    assert (await rows(db))["rollup_channel_days"]
    clock.advance(days=1)              # the hourly housekeeping: today closes
    await ticker.tick()
    async with db.sessions() as session:
        state = await session.get(RollupState, "analytics", populate_existing=True)
    assert state is not None and state.through == TODAY + timedelta(days=1)
