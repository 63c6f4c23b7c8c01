"""Agent performance over a period: conversations handled and replies, first-response and
resolution times of their tickets, CSAT, care tasks done, follow-ups made, and the revenue
of their customers (the confirmed orders credited to them: by default an order is
credited to the customer's owner when it is placed)."""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import distinct, exists, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm_core.models import (
    Agent,
    CareTask,
    Direction,
    FeedbackResponse,
    FollowUp,
    Interaction,
    Order,
    RollupAgentConversation,
    RollupAgentDay,
    RollupOrderDay,
    RollupTicketDuration,
    Ticket,
    agent_teams,
)
from crm_core.services.analytics.base import (
    DEFAULT_CURRENCY,
    Chart,
    Period,
    Report,
    Spread,
    Table,
    as_decimal,
    dialect_of,
    minutes,
    number,
    pairs,
    percentile,
    seconds_between,
    spreads_over,
)
from crm_core.services.analytics.rollups import FIRST_RESPONSE, RESOLUTION
from crm_core.services.analytics.split import Split, split

COLUMNS = ["agent", "conversations", "replies", "first_response_p50_min",
           "resolution_p50_min", "resolved", "csat_average", "csat_responses",
           "care_tasks_done", "follow_ups", "revenue"]


async def agent_performance(session: AsyncSession, period: Period, *,
                            currency: str = DEFAULT_CURRENCY, team_id: int | None = None,
                            agent_id: int | None = None) -> Report:
    """One row per active agent (of a team, or one agent only), table ``agents``."""
    report = Report("agents", period)
    dialect = dialect_of(session)
    start, end = period.start, period.end
    agents_query = select(Agent.id, Agent.display_name).where(Agent.active.is_(True))
    if team_id is not None:
        agents_query = agents_query.where(Agent.id.in_(
            select(agent_teams.c.agent_id).where(agent_teams.c.team_id == team_id)))
    if agent_id is not None:
        agents_query = agents_query.where(Agent.id == agent_id)
    agents = {a: name for a, name in await session.execute(agents_query.order_by(Agent.id))}
    ids = list(agents)
    if not ids:
        report.add(Table("agents", ["agent_id", *COLUMNS]))
        return report

    parts = await split(session, period)
    handled = await _handled(session, period, parts, ids)
    first = await _spreads(
        session, FIRST_RESPONSE, parts, ids, Ticket.created_at,
        seconds_between(Ticket.first_responded_at, Ticket.created_at, dialect),
        Ticket.first_responded_at.is_not(None))
    resolution = await _spreads(
        session, RESOLUTION, parts, ids, Ticket.resolved_at,
        seconds_between(Ticket.resolved_at, Ticket.created_at, dialect))
    csat = await _csat(session, parts, ids)
    tasks = await pairs(session, (
        select(CareTask.assignee_id, func.count())
        .where(CareTask.status == "done", CareTask.completed_at >= start,
               CareTask.completed_at < end)
        .group_by(CareTask.assignee_id)))
    follow_ups = await pairs(session, (
        select(FollowUp.agent_id, func.count())
        .where(FollowUp.at >= start, FollowUp.at < end)
        .group_by(FollowUp.agent_id)))
    revenue = await _revenue(session, parts, ids, currency)

    rows = []
    for agent, name in agents.items():
        conversations, replies = handled.get(agent, (0, 0))
        f, r = first.get(agent), resolution.get(agent)
        score_sum, responses = csat.get(agent, (0, 0))
        avg = score_sum / responses if responses else None
        rows.append([agent, name, conversations, replies, minutes(f.p50) if f else None,
                     minutes(r.p50) if r else None, r.count if r else 0,
                     number(avg) if responses else None, responses,
                     int(tasks.get(agent, 0)), int(follow_ups.get(agent, 0)),
                     number(revenue.get(agent))])
    report.add(Table("agents", ["agent_id", *COLUMNS], rows),
               Chart("agents", "bar", "agent", ("conversations", "resolved")),
               Chart("agents", "bar", "agent", ("revenue",)))
    return report


SPANS_FROM_DAYS = 92
"""From this many days on, conversations handled are counted from the reply spans
(``rollup_agent_conversations``); shorter periods count the interactions directly, which
is cheaper there (most spans would straddle the period's edges)."""


async def _handled(session: AsyncSession, period: Period, parts: Split, ids: list[int],
                   ) -> dict[int, tuple[int, int]]:
    """Per agent: distinct conversations replied in, and replies, in the period."""
    rolled = parts.rolled
    if rolled is None or period.days < SPANS_FROM_DAYS:
        return await _handled_live(session, period.start, period.end, ids)
    replies = await pairs(session, (
        select(RollupAgentDay.agent_id, func.sum(RollupAgentDay.replies))
        .where(RollupAgentDay.agent_id.in_(ids), RollupAgentDay.day >= rolled.first,
               RollupAgentDay.day <= rolled.last)
        .group_by(RollupAgentDay.agent_id)))
    start, end = rolled.start, rolled.end
    span = RollupAgentConversation
    inside = await pairs(session, (
        select(span.agent_id, func.count())
        .where(span.agent_id.in_(ids), span.first_at >= start, span.last_at < end)
        .group_by(span.agent_id)))
    # A span crossing an edge of the period may or may not have a reply inside it.
    straddling = await pairs(session, (
        select(span.agent_id, func.count())
        .where(span.agent_id.in_(ids), span.first_at < end, span.last_at >= start,
               or_(span.first_at < start, span.last_at >= end),
               _replied(span.agent_id, span.conversation_id, start, end))
        .group_by(span.agent_id)))
    found = {a: (int(inside.get(a, 0)) + int(straddling.get(a, 0)), int(replies.get(a, 0)))
             for a in ids}
    if parts.live is None:
        return found
    live = parts.live
    tail = await _handled_live(session, live.start, live.end, ids)
    # Conversations of the live days already counted from the spans.
    again = await pairs(session, (
        select(Interaction.agent_id, func.count(distinct(Interaction.conversation_id)))
        .where(Interaction.agent_id.in_(ids), Interaction.direction == Direction.OUTBOUND,
               Interaction.occurred_at >= live.start, Interaction.occurred_at < live.end,
               _replied(Interaction.agent_id, Interaction.conversation_id, start, end))
        .group_by(Interaction.agent_id)))
    return {a: (c + tail.get(a, (0, 0))[0] - int(again.get(a, 0)), r + tail.get(a, (0, 0))[1])
            for a, (c, r) in found.items()}


async def _handled_live(session: AsyncSession, start: datetime, end: datetime,
                        ids: list[int]) -> dict[int, tuple[int, int]]:
    # Narrowed to the agents in SQL: one index range per agent.
    return {a: (int(c), int(r)) for a, c, r in await session.execute(
        select(Interaction.agent_id, func.count(distinct(Interaction.conversation_id)),
               func.count())
        .where(Interaction.agent_id.in_(ids), Interaction.direction == Direction.OUTBOUND,
               Interaction.occurred_at >= start, Interaction.occurred_at < end)
        .group_by(Interaction.agent_id))}


def _replied(agent: Any, conversation: Any, start: datetime, end: datetime) -> Any:
    """An outbound reply of ``agent`` in ``conversation`` within ``[start, end)``."""
    reply = aliased(Interaction)
    return exists().where(reply.conversation_id == conversation, reply.agent_id == agent,
                          reply.direction == Direction.OUTBOUND, reply.occurred_at >= start,
                          reply.occurred_at < end)


async def _spreads(session: AsyncSession, kind: str, parts: Split, ids: list[int], when: Any,
                   seconds: Any, *where: Any) -> dict[Hashable, Spread]:
    """p50/p90 per agent of the period's durations: the roll-up's for its days, read
    already sorted (index order), merged with the tickets' of the live days."""
    if parts.rolled is None:
        live = select(Ticket.assignee_id.label("g"), seconds.label("s")).where(
            when >= parts.period.start, when < parts.period.end, *where)
        return await spreads_over(session, live.subquery())
    d = RollupTicketDuration
    conditions = (d.kind == kind, d.agent_id.in_(ids), d.day >= parts.rolled.first,
                  d.day <= parts.rolled.last)
    found: dict[Hashable, list[float]] = {}
    if dialect_of(session) == "postgresql":
        # One sorted array per agent, straight from the index: no sort of the whole set.
        for agent, values in await session.execute(
                select(d.agent_id, func.array_agg(aggregate_order_by(d.seconds, d.seconds)))
                .where(*conditions).group_by(d.agent_id)):
            found[agent] = list(values)  # float8[]: floats, already sorted
    else:
        for agent, value in await session.execute(
                select(d.agent_id, d.seconds).where(*conditions)
                .order_by(d.agent_id, d.seconds)):
            found.setdefault(agent, []).append(float(value))
    if parts.live is not None:
        for agent, value in await session.execute(
                select(Ticket.assignee_id, seconds)
                .where(when >= parts.live.start, when < parts.live.end, *where)):
            insort(found.setdefault(agent, []), float(value))
    return {a: Spread(len(v), percentile(v, 0.5), percentile(v, 0.9)) for a, v in found.items()}


async def _revenue(session: AsyncSession, parts: Split, ids: list[int], currency: str,
                   ) -> dict[int, Decimal]:
    """Per agent: confirmed orders credited to them in the period, in ``currency``."""
    found: dict[int, Decimal] = {}
    queries = []
    if parts.rolled is not None:
        day = RollupOrderDay
        queries.append(select(day.agent_id, func.sum(day.revenue))
                       .where(day.currency == currency, day.agent_id.in_(ids),
                              day.day >= parts.rolled.first, day.day <= parts.rolled.last)
                       .group_by(day.agent_id))
    if parts.live is not None:
        queries.append(select(Order.agent_id, func.sum(Order.amount))
                       .where(Order.status == "confirmed", Order.currency == currency,
                              Order.ordered_at >= parts.live.start,
                              Order.ordered_at < parts.live.end)
                       .group_by(Order.agent_id))
    for query in queries:
        for agent, total in await session.execute(query):
            found[agent] = found.get(agent, Decimal(0)) + as_decimal(total)
    return found


async def _csat(session: AsyncSession, parts: Split, ids: list[int],
                ) -> dict[int, tuple[float, int]]:
    """Per agent (assignee of the ticket answered): CSAT score sum and answers."""
    found: dict[int, tuple[float, int]] = {}
    if parts.rolled is not None:
        for a, total, n in await session.execute(
                select(RollupAgentDay.agent_id, func.sum(RollupAgentDay.csat_score_sum),
                       func.sum(RollupAgentDay.csat_responses))
                .where(RollupAgentDay.agent_id.in_(ids), RollupAgentDay.day >= parts.rolled.first,
                       RollupAgentDay.day <= parts.rolled.last)
                .group_by(RollupAgentDay.agent_id)):
            found[a] = (float(total or 0), int(n or 0))
    if parts.live is not None:
        # The smaller tables are grouped whole and picked here, which lets the planner
        # join feedback to tickets by key instead of scanning tickets by assignee.
        for a, total, n in await session.execute(
                select(Ticket.assignee_id, func.sum(FeedbackResponse.score), func.count())
                .join(Ticket, Ticket.id == FeedbackResponse.ticket_id)
                .where(FeedbackResponse.kind == "csat", FeedbackResponse.score.is_not(None),
                       FeedbackResponse.created_at >= parts.live.start,
                       FeedbackResponse.created_at < parts.live.end)
                .group_by(Ticket.assignee_id)):
            before = found.get(a, (0.0, 0))
            found[a] = (before[0] + float(total or 0), before[1] + int(n))
    return found
