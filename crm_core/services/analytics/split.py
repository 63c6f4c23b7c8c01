"""Which days of a report's period the roll-ups answer and which a live query must: the
whole days before the roll-ups' ``through`` day, and the rest (today, and any day not
yet rolled up) from the source tables, so that the figures stay exact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import RollupState
from crm_core.services.analytics.base import Period
from crm_core.services.analytics.rollups import STATE, as_date


@dataclass(frozen=True)
class Split:
    """A period cut in two: ``rolled`` (days the roll-ups hold, or ``None``) and ``live``
    (the days after them, or ``None``)."""

    period: Period
    rolled: Period | None
    live: Period | None


async def split(session: AsyncSession, period: Period) -> Split:
    """Cut ``period`` at the roll-ups' ``through`` day (all live without roll-ups, or
    when they were built for another time zone)."""
    row = (await session.execute(select(RollupState.through, RollupState.zone)
                                 .where(RollupState.name == STATE))).first()
    if row is None or row.zone != period.zone:
        return Split(period, None, period)
    through = as_date(row.through)
    if through <= period.first:
        return Split(period, None, period)
    rolled = Period(period.first, min(period.last, through - timedelta(days=1)), period.zone)
    live = Period(through, period.last, period.zone) if period.last >= through else None
    return Split(period, rolled, live)
