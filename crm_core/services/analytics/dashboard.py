"""The supervisor's dashboard: volume by channel, open and overdue tickets, first-response
and resolution times, SLA attainment, CSAT and agents online, for a period (default:
today)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    Agent,
    Availability,
    Channel,
    Direction,
    FeedbackResponse,
    Interaction,
    Ticket,
    TicketStatus,
)
from crm_core.services.analytics.base import (
    Chart,
    Period,
    Report,
    Table,
    dialect_of,
    minutes,
    number,
    ratio,
    seconds_between,
    spreads,
)

OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
SATISFIED = 4
"""A CSAT score from this up counts as satisfied."""


def overdue_condition(now: datetime) -> ColumnElement[bool]:
    """An open ticket past its first-response or resolution due time."""
    return and_(Ticket.status.in_(OPEN_STATUSES), or_(
        and_(Ticket.first_responded_at.is_(None), Ticket.first_response_due_at < now),
        Ticket.resolution_due_at < now))


async def dashboard(session: AsyncSession, period: Period, *, now: datetime,
                    channel: Channel | None = None) -> Report:
    """The dashboard figures (table ``summary``: metric, value) and the volume by channel
    (table ``volume``)."""
    report = Report("dashboard", period)
    dialect = dialect_of(session)
    start, end = period.start, period.end

    volume_query = (select(Interaction.channel, func.count())
                    .where(Interaction.occurred_at >= start, Interaction.occurred_at < end,
                           Interaction.direction == Direction.INBOUND)
                    .group_by(Interaction.channel))
    if channel is not None:
        volume_query = volume_query.where(Interaction.channel == channel)
    volume = {c.value: int(n) for c, n in await session.execute(volume_query)}
    report.add(Table("volume", ["channel", "inbound"],
                     [[c, n] for c, n in sorted(volume.items(), key=lambda kv: -kv[1])]),
               Chart("volume", "bar", "channel", ("inbound",)))

    open_count, overdue = (await session.execute(
        select(func.count(), func.count(case((overdue_condition(now), 1))))
        .where(Ticket.status.in_(OPEN_STATUSES)))).one()

    created = and_(Ticket.created_at >= start, Ticket.created_at < end)
    first = (await spreads(session, seconds_between(Ticket.first_responded_at, Ticket.created_at,
                                                    dialect),
                           [created, Ticket.first_responded_at.is_not(None)])).get(None)
    resolved_in = and_(Ticket.resolved_at >= start, Ticket.resolved_at < end)
    resolution = (await spreads(session, seconds_between(Ticket.resolved_at, Ticket.created_at,
                                                         dialect),
                                [resolved_in])).get(None)

    # First response SLA: tickets of the period with a target, answered or already late.
    fr_met, fr_total = (await session.execute(
        select(func.count(case((Ticket.first_responded_at <= Ticket.first_response_due_at, 1))),
               func.count())
        .where(created, Ticket.first_response_due_at.is_not(None),
               or_(Ticket.first_responded_at.is_not(None),
                   Ticket.first_response_due_at < now)))).one()
    res_met, res_total = (await session.execute(
        select(func.count(case((Ticket.resolved_at <= Ticket.resolution_due_at, 1))),
               func.count())
        .where(resolved_in, Ticket.resolution_due_at.is_not(None)))).one()

    csat_avg, csat_count, csat_good = (await session.execute(
        select(func.avg(FeedbackResponse.score), func.count(),
               func.count(case((FeedbackResponse.score >= SATISFIED, 1))))
        .where(FeedbackResponse.kind == "csat", FeedbackResponse.score.is_not(None),
               FeedbackResponse.created_at >= start, FeedbackResponse.created_at < end))).one()

    online, active = (await session.execute(
        select(func.count(case((Agent.availability == Availability.ONLINE, 1))), func.count())
        .where(Agent.active.is_(True)))).one()

    rows: list[list[object]] = [
        ["inbound_total", sum(volume.values())],
        ["open_tickets", int(open_count)],
        ["overdue_tickets", int(overdue)],
        ["first_response_p50_min", minutes(first.p50) if first else None],
        ["first_response_p90_min", minutes(first.p90) if first else None],
        ["resolution_p50_min", minutes(resolution.p50) if resolution else None],
        ["resolution_p90_min", minutes(resolution.p90) if resolution else None],
        ["sla_first_response", ratio(fr_met, fr_total)],
        ["sla_resolution", ratio(res_met, res_total)],
        ["sla_attainment", ratio(fr_met + res_met, fr_total + res_total)],
        ["csat_average", number(csat_avg) if csat_count else None],
        ["csat_satisfied", ratio(csat_good, csat_count)],
        ["csat_responses", int(csat_count)],
        ["agents_online", int(online)],
        ["agents_active", int(active)],
    ]
    report.add(Table("summary", ["metric", "value"], rows))
    return report
