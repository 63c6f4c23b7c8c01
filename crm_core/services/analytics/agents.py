"""Agent performance over a period: conversations handled and replies, first-response and
resolution times of their tickets, CSAT, care tasks done, follow-ups made, and the revenue
of their customers (the confirmed orders credited to them: by default an order is
credited to the customer's owner when it is placed)."""

from __future__ import annotations

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
    Agent,
    CareTask,
    Direction,
    FeedbackResponse,
    FollowUp,
    Interaction,
    Order,
    Ticket,
    agent_teams,
)
from crm_core.services.analytics.base import (
    DEFAULT_CURRENCY,
    Chart,
    Period,
    Report,
    Table,
    dialect_of,
    minutes,
    number,
    pairs,
    seconds_between,
    spreads,
)

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

    # Only the interactions scan is narrowed to the agents in SQL (one index range per
    # agent); the smaller tables are grouped whole and picked here, which lets the planner
    # join feedback to tickets by key instead of scanning tickets by assignee.
    handled = {a: (int(c), int(r)) for a, c, r in await session.execute(
        select(Interaction.agent_id, func.count(distinct(Interaction.conversation_id)),
               func.count())
        .where(Interaction.agent_id.in_(ids), Interaction.direction == Direction.OUTBOUND,
               Interaction.occurred_at >= start, Interaction.occurred_at < end)
        .group_by(Interaction.agent_id))}
    first = await spreads(
        session, seconds_between(Ticket.first_responded_at, Ticket.created_at, dialect),
        [Ticket.created_at >= start, Ticket.created_at < end,
         Ticket.first_responded_at.is_not(None)], group=Ticket.assignee_id)
    resolution = await spreads(
        session, seconds_between(Ticket.resolved_at, Ticket.created_at, dialect),
        [Ticket.resolved_at >= start, Ticket.resolved_at < end], group=Ticket.assignee_id)
    csat = {a: (avg, int(n)) for a, avg, n in await session.execute(
        select(Ticket.assignee_id, func.avg(FeedbackResponse.score), func.count())
        .join(Ticket, Ticket.id == FeedbackResponse.ticket_id)
        .where(FeedbackResponse.kind == "csat", FeedbackResponse.score.is_not(None),
               FeedbackResponse.created_at >= start, FeedbackResponse.created_at < end)
        .group_by(Ticket.assignee_id))}
    tasks = await pairs(session, (
        select(CareTask.assignee_id, func.count())
        .where(CareTask.status == "done", CareTask.completed_at >= start,
               CareTask.completed_at < end)
        .group_by(CareTask.assignee_id)))
    follow_ups = await pairs(session, (
        select(FollowUp.agent_id, func.count())
        .where(FollowUp.at >= start, FollowUp.at < end)
        .group_by(FollowUp.agent_id)))
    revenue = await pairs(session, (
        select(Order.agent_id, func.sum(Order.amount))
        .where(Order.status == "confirmed", Order.currency == currency,
               Order.ordered_at >= start, Order.ordered_at < end)
        .group_by(Order.agent_id)))

    rows = []
    for agent, name in agents.items():
        conversations, replies = handled.get(agent, (0, 0))
        f, r = first.get(agent), resolution.get(agent)
        avg, responses = csat.get(agent, (None, 0))
        rows.append([agent, name, conversations, replies, minutes(f.p50) if f else None,
                     minutes(r.p50) if r else None, r.count if r else 0,
                     number(avg) if responses else None, responses,
                     int(tasks.get(agent, 0)), int(follow_ups.get(agent, 0)),
                     number(revenue.get(agent))])
    report.add(Table("agents", ["agent_id", *COLUMNS], rows),
               Chart("agents", "bar", "agent", ("conversations", "resolved")),
               Chart("agents", "bar", "agent", ("revenue",)))
    return report
