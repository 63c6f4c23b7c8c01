"""Daily roll-ups of the report figures over long ranges, kept by
``crm_core.services.analytics.rollups`` (whole closed days in the business time zone)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, Float, Index, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import Channel, Direction


class RollupState(Base):
    """How far the roll-ups go: every day before ``through`` (in ``zone``) is rolled up,
    and rows changed since ``watermark`` have not been looked at yet."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    zone: Mapped[str] = mapped_column(String(64))
    through: Mapped[date] = mapped_column(Date)
    watermark: Mapped[datetime]
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class RollupChannelDay(Base):
    """Interactions of one day by channel and direction."""

    __tablename__ = "rollup_channel_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[Channel] = mapped_column(primary_key=True)
    direction: Mapped[Direction] = mapped_column(primary_key=True)
    interactions: Mapped[int] = mapped_column(Integer)


class RollupAgentDay(Base):
    """One agent's day: replies sent, CSAT answers (count and score sum) on the tickets
    assigned to them."""

    __tablename__ = "rollup_agent_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    agent_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    replies: Mapped[int] = mapped_column(Integer, default=0)
    csat_responses: Mapped[int] = mapped_column(Integer, default=0)
    csat_score_sum: Mapped[int] = mapped_column(Integer, default=0)


class RollupAgentConversation(Base):
    """The first and last reply of an agent in a conversation (closed days only): a
    conversation whose span lies inside a period was handled in it, one whose span misses
    it was not, and only those straddling an edge are checked against the interactions."""

    __tablename__ = "rollup_agent_conversations"
    __table_args__ = (Index("ix_rollup_agent_conversations_span", "first_at", "last_at",
                            "agent_id"),
                      Index("ix_rollup_agent_conversations_conversation_id",
                            "conversation_id"))

    agent_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


class RollupTicketDuration(Base):
    """A ticket's first-response or resolution time in seconds, on the day it counts for
    (created, resolved) with its assignee: percentiles need every duration, so they are
    kept one per ticket, narrow and sorted by the index (agent, seconds)."""

    __tablename__ = "rollup_ticket_durations"
    __table_args__ = (Index("ix_rollup_ticket_durations_sorted", "kind", "agent_id", "seconds",
                            postgresql_include=["day"]),)

    ticket_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    agent_id: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)


class RollupOrderDay(Base):
    """Confirmed orders of one day by the agent credited (0: none) and currency."""

    __tablename__ = "rollup_order_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    agent_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    orders: Mapped[int] = mapped_column(Integer)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2))
