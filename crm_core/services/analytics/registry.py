"""Every report by name, with one calling convention for the console, exports, the weekly
mail and the benchmark."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Channel
from crm_core.services.analytics import agents, customers, dashboard, sales
from crm_core.services.analytics.base import DEFAULT_CURRENCY, Period, Report, dialect_of


@dataclass(frozen=True)
class Filters:
    """What a report may be narrowed by, besides the period."""

    now: datetime
    currency: str = DEFAULT_CURRENCY
    channel: Channel | None = None
    team_id: int | None = None
    agent_id: int | None = None


Builder = Callable[[AsyncSession, Period, Filters], Awaitable[Report]]


async def _dashboard(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await dashboard.dashboard(s, p, now=f.now, channel=f.channel)


async def _agents(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await agents.agent_performance(s, p, currency=f.currency, team_id=f.team_id,
                                          agent_id=f.agent_id)


async def _composition(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.composition(s, p)


async def _rfm(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.rfm(s, p, currency=f.currency)


async def _satisfaction(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.satisfaction(s, p)


async def _churn(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.churn(s, p)


async def _ranking(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.value_ranking(s, p, currency=f.currency)


async def _channels(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await customers.channel_mix(s, p)


async def _sales(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await sales.sales_report(s, p, today=f.now.astimezone(p.tz).date(),
                                    currency=f.currency)


async def _forecast(s: AsyncSession, p: Period, f: Filters) -> Report:
    return await sales.forecast(s, p, currency=f.currency)


REPORTS: dict[str, Builder] = {
    "agents": _agents,
    "sales": _sales,
    "forecast": _forecast,
    "composition": _composition,
    "rfm": _rfm,
    "satisfaction": _satisfaction,
    "churn": _churn,
    "ranking": _ranking,
    "channels": _channels,
}
"""The reports of the console (the dashboard is its own page)."""

ALL: dict[str, Builder] = {"dashboard": _dashboard, **REPORTS}
"""The dashboard and every report."""

FORWARD = frozenset({"forecast"})
"""Reports about a coming period (their default range starts tomorrow)."""


REPORT_WORK_MEM = "64MB"
"""PostgreSQL sort and hash memory for a report's transaction: RFM's window sorts and the
per-customer aggregates spill to disk with the default 4 MB on a year of orders."""


async def build(name: str, session: AsyncSession, period: Period, filters: Filters) -> Report:
    """Compute the report ``name`` (a key of :data:`ALL`)."""
    if dialect_of(session) == "postgresql":
        await session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
    return await ALL[name](session, period, filters)
