"""Keeping the daily roll-ups (``crm_core.models.rollups``) up to date.

Every closed day (before today in the business time zone) is rolled up: interactions by
channel and direction, each agent's replies and CSAT answers, confirmed orders by agent
and currency, the span of each agent's
replies in a conversation, and every ticket's first-response and resolution time. A
refresh recomputes only what changed since the last one — the days that just closed, the
days of rows written or changed since the watermark (late data included), the
conversations and tickets touched — by deleting and re-inserting their rows, so running
it twice gives the same rows. On PostgreSQL a transaction-scoped advisory lock lets one
refresh run at a time (another scheduler skips); SQLite serialises writers anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import ColumnElement, Date, cast, delete, func, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import (
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
from crm_core.services.analytics.base import dialect_of, seconds_between

log = structlog.get_logger(__name__)

STATE = "analytics"
"""The name of the roll-ups' row in ``rollup_state``."""
SAFETY = timedelta(minutes=5)
"""The watermark trails the refresh by this much: a row stamped just before a refresh
but committed after it is still looked at next time (recomputing twice is harmless)."""
LOCK_KEY = 0x43430013
"""PostgreSQL advisory lock id of a refresh."""
CHUNK = 500
FIRST_RESPONSE, RESOLUTION = "first_response", "resolution"


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did: days, conversations and tickets recomputed, up to ``through``
    (exclusive); ``full`` for a rebuild, ``skipped`` when another refresh held the lock."""

    through: date | None
    days: int = 0
    conversations: int = 0
    tickets: int = 0
    full: bool = False
    skipped: bool = False


def day_start(day: date, zone: str) -> datetime:
    """Midnight of ``day`` in ``zone``, as UTC."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def local_day(column: Any, dialect: str, zone: str) -> ColumnElement[Any]:
    """The calendar day of a timestamp in the business time zone (SQLite: shifted by the
    zone's current UTC offset, as ``month_key`` — exact for zones without daylight
    saving such as Asia/Shanghai)."""
    if dialect == "postgresql":
        return cast(func.timezone(zone, column), Date)
    offset = int(datetime.now(ZoneInfo(zone)).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    return func.date(column, f"{offset:+d} minutes")


def as_date(value: Any) -> date:
    """A day as SQLite (text) or PostgreSQL (date) returns it."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as ``(first, last)`` ranges."""
    found: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if found and found[-1][1] + timedelta(days=1) == day:
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found


async def refresh_rollups(session: AsyncSession, *, now: datetime, zone: str,
                          rebuild: bool = False) -> RefreshResult:
    """Bring the roll-ups up to yesterday (in ``zone``) in the caller's transaction: a
    full rebuild the first time (or with ``rebuild``, or when the zone changed), else only
    what changed since the last refresh."""
    dialect = dialect_of(session)
    if dialect == "postgresql" and not await session.scalar(
            select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
        return RefreshResult(None, skipped=True)
    through = now.astimezone(ZoneInfo(zone)).date()
    state = await session.get(RollupState, STATE, populate_existing=True)
    full = rebuild or state is None or state.zone != zone or through < state.through
    refresh = _Refresh(session, dialect, zone, through)
    if full or state is None:
        result = await refresh.rebuild()
    else:
        result = await refresh.incremental(state.watermark, state.through)
    if state is None:
        state = RollupState(name=STATE, zone=zone, through=through, watermark=now - SAFETY)
        session.add(state)
    state.zone, state.through, state.watermark, state.refreshed_at = \
        zone, through, now - SAFETY, now
    await session.flush()
    log.info("analytics.rollups_refreshed", through=through.isoformat(), full=result.full,
             days=result.days, conversations=result.conversations, tickets=result.tickets)
    return result


class _Refresh:
    """One refresh: recomputes days, conversations and tickets up to ``through``."""

    def __init__(self, session: AsyncSession, dialect: str, zone: str, through: date) -> None:
        self.session, self.dialect, self.zone, self.through = session, dialect, zone, through
        self.end = day_start(through, zone)

    def day(self, column: Any) -> ColumnElement[Any]:
        return local_day(column, self.dialect, self.zone)

    async def rebuild(self) -> RefreshResult:
        for model in (RollupChannelDay, RollupAgentDay, RollupOrderDay,
                      RollupAgentConversation, RollupTicketDuration):
            await self.session.execute(delete(model))
        starts = [await self.session.scalar(select(func.min(Interaction.occurred_at))),
                  await self.session.scalar(select(func.min(FeedbackResponse.created_at))),
                  await self.session.scalar(select(func.min(Order.ordered_at)))]
        found = [s for s in starts if s is not None]
        days = 0
        if found:
            first = min(found).astimezone(ZoneInfo(self.zone)).date()
            if first < self.through:
                await self.days([(first, self.through - timedelta(days=1))])
                days = (self.through - first).days
        conversations = await self.conversations(None)
        tickets = await self.tickets(None)
        return RefreshResult(self.through, days, conversations, tickets, full=True)

    async def incremental(self, since: datetime, previous: date) -> RefreshResult:
        touched = {previous + timedelta(days=n) for n in range((self.through - previous).days)}
        closing = day_start(previous, self.zone)
        touched |= {as_date(d) for d in await self.session.scalars(
            select(self.day(Interaction.occurred_at)).distinct()
            .where(Interaction.created_at >= since, Interaction.occurred_at < self.end))}
        csat_changed = or_(FeedbackResponse.updated_at >= since, Ticket.updated_at >= since)
        touched |= {as_date(d) for d in await self.session.scalars(
            select(self.day(FeedbackResponse.created_at)).distinct()
            .outerjoin(Ticket, Ticket.id == FeedbackResponse.ticket_id)
            .where(csat_changed, FeedbackResponse.kind == "csat",
                   FeedbackResponse.created_at < self.end))}
        touched |= {as_date(d) for d in await self.session.scalars(
            select(self.day(Order.ordered_at)).distinct()
            .where(Order.updated_at >= since, Order.ordered_at < self.end))}
        day_runs = runs(touched)
        await self.days(day_runs)
        conversation_ids = list(await self.session.scalars(
            select(Interaction.conversation_id).distinct()
            .where(Interaction.direction == Direction.OUTBOUND,
                   Interaction.agent_id.is_not(None), Interaction.occurred_at < self.end,
                   or_(Interaction.created_at >= since, Interaction.occurred_at >= closing))))
        ticket_ids = list(await self.session.scalars(
            select(Ticket.id).where(or_(
                Ticket.updated_at >= since,
                (Ticket.created_at >= closing) & (Ticket.created_at < self.end),
                (Ticket.resolved_at >= closing) & (Ticket.resolved_at < self.end)))))
        conversations = await self.conversations(conversation_ids)
        tickets = await self.tickets(ticket_ids)
        return RefreshResult(self.through, sum((b - a).days + 1 for a, b in day_runs),
                             conversations, tickets)

    async def days(self, day_runs: Sequence[tuple[date, date]]) -> None:
        """Recompute the channel, agent and order rows of these days."""
        for first, last in day_runs:
            for model in (RollupChannelDay, RollupAgentDay, RollupOrderDay):
                await self.session.execute(delete(model).where(model.day >= first,
                                                               model.day <= last))
            start, end = day_start(first, self.zone), day_start(last + timedelta(days=1),
                                                                   self.zone)
            await self.orders(start, end)
            day = self.day(Interaction.occurred_at)
            channel_rows = [
                {"day": as_date(d), "channel": c, "direction": r, "interactions": int(n)}
                for d, c, r, n in await self.session.execute(
                    select(day, Interaction.channel, Interaction.direction, func.count())
                    .where(Interaction.occurred_at >= start, Interaction.occurred_at < end)
                    .group_by(day, Interaction.channel, Interaction.direction))]
            agents: dict[tuple[date, int], dict[str, Any]] = {}
            for d, agent, n in await self.session.execute(
                    select(day, Interaction.agent_id, func.count())
                    .where(Interaction.occurred_at >= start, Interaction.occurred_at < end,
                           Interaction.direction == Direction.OUTBOUND,
                           Interaction.agent_id.is_not(None))
                    .group_by(day, Interaction.agent_id)):
                _agent_row(agents, d, agent)["replies"] = int(n)
            feedback_day = self.day(FeedbackResponse.created_at)
            for d, agent, n, total in await self.session.execute(
                    select(feedback_day, Ticket.assignee_id, func.count(),
                           func.sum(FeedbackResponse.score))
                    .join(Ticket, Ticket.id == FeedbackResponse.ticket_id)
                    .where(FeedbackResponse.kind == "csat", FeedbackResponse.score.is_not(None),
                           Ticket.assignee_id.is_not(None),
                           FeedbackResponse.created_at >= start, FeedbackResponse.created_at < end)
                    .group_by(feedback_day, Ticket.assignee_id)):
                found = _agent_row(agents, d, agent)
                found["csat_responses"], found["csat_score_sum"] = int(n), int(total or 0)
            if channel_rows:
                await self.session.execute(insert(RollupChannelDay), channel_rows)
            if agents:
                await self.session.execute(insert(RollupAgentDay), list(agents.values()))

    async def orders(self, start: datetime, end: datetime) -> None:
        """Insert the order rows of ``[start, end)`` (whole days)."""
        day, agent = self.day(Order.ordered_at), func.coalesce(Order.agent_id, 0)
        found = [{"day": as_date(d), "agent_id": int(a), "currency": c, "orders": int(n),
                  "revenue": total}
                 for d, a, c, n, total in await self.session.execute(
                     select(day, agent, Order.currency, func.count(), func.sum(Order.amount))
                     .where(Order.status == "confirmed", Order.ordered_at >= start,
                            Order.ordered_at < end)
                     .group_by(day, agent, Order.currency))]
        if found:
            await self.session.execute(insert(RollupOrderDay), found)

    async def conversations(self, ids: list[int] | None) -> int:
        """Recompute the reply spans of these conversations (``None``: all)."""
        spans = (select(Interaction.agent_id, Interaction.conversation_id,
                        func.min(Interaction.occurred_at), func.max(Interaction.occurred_at))
                 .where(Interaction.direction == Direction.OUTBOUND,
                        Interaction.agent_id.is_not(None), Interaction.occurred_at < self.end)
                 .group_by(Interaction.agent_id, Interaction.conversation_id))
        columns = ["agent_id", "conversation_id", "first_at", "last_at"]
        target = insert(RollupAgentConversation)
        if ids is None:
            await self.session.execute(target.from_select(columns, spans))
            return int(await self.session.scalar(
                select(func.count()).select_from(RollupAgentConversation)) or 0)
        for chunk in _chunks(ids):
            await self.session.execute(delete(RollupAgentConversation).where(
                RollupAgentConversation.conversation_id.in_(chunk)))
            await self.session.execute(target.from_select(
                columns, spans.where(Interaction.conversation_id.in_(chunk))))
        return len(ids)

    async def tickets(self, ids: list[int] | None) -> int:
        """Recompute the durations of these tickets (``None``: all)."""
        columns = ["ticket_id", "kind", "day", "agent_id", "seconds"]
        first = (select(Ticket.id, literal(FIRST_RESPONSE), self.day(Ticket.created_at),
                        Ticket.assignee_id,
                        seconds_between(Ticket.first_responded_at, Ticket.created_at,
                                        self.dialect))
                 .where(Ticket.first_responded_at.is_not(None), Ticket.created_at < self.end))
        resolution = (select(Ticket.id, literal(RESOLUTION), self.day(Ticket.resolved_at),
                             Ticket.assignee_id,
                             seconds_between(Ticket.resolved_at, Ticket.created_at,
                                             self.dialect))
                      .where(Ticket.resolved_at.is_not(None), Ticket.resolved_at < self.end))
        target = insert(RollupTicketDuration)
        if ids is None:
            for query in (first, resolution):
                await self.session.execute(target.from_select(columns, query))
            return int(await self.session.scalar(
                select(func.count(func.distinct(RollupTicketDuration.ticket_id)))) or 0)
        for chunk in _chunks(ids):
            await self.session.execute(delete(RollupTicketDuration).where(
                RollupTicketDuration.ticket_id.in_(chunk)))
            for query in (first, resolution):
                await self.session.execute(target.from_select(
                    columns, query.where(Ticket.id.in_(chunk))))
        return len(ids)


def _agent_row(rows: dict[tuple[date, int], dict[str, Any]], day: Any,
               agent: int) -> dict[str, Any]:
    key = (as_date(day), agent)
    return rows.setdefault(key, {"day": key[0], "agent_id": agent, "replies": 0,
                                 "csat_responses": 0, "csat_score_sum": 0})


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for index in range(0, len(ids), CHUNK):
        yield ids[index:index + CHUNK]
