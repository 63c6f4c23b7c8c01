"""Agents (console users) and the teams they work in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, Table, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import AgentRole, Availability

agent_teams = Table(
    "agent_teams",
    Base.metadata,
    Column("agent_id", ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
)


class Team(Base):
    """A group of agents that shares a queue (e.g. VIP desk, 售后服务)."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    last_assigned_agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL", use_alter=True)
    )
    """Where round-robin assignment continues from."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    agents: Mapped[list[Agent]] = relationship(
        secondary=agent_teams, back_populates="teams", lazy="raise"
    )


class Agent(Base):
    """A person who works in the console: an agent, supervisor or admin."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(100))
    """Where calls for this agent are put through: an E.164 number, ``client:NAME`` or a
    ``sip:`` address."""
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[AgentRole] = mapped_column(default=AgentRole.AGENT)
    skills: Mapped[list[str]] = mapped_column(default=list)
    languages: Mapped[list[str]] = mapped_column(default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=10)
    """How many open conversations the agent takes at once."""
    availability: Mapped[Availability] = mapped_column(default=Availability.OFFLINE)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None]
    ui_language: Mapped[str] = mapped_column(String(20), default="zh-CN", server_default="zh-CN")
    """The console's language for this agent: ``zh-CN`` or ``en``."""
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    password_change_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false())
    """Set when an administrator gave the password (a one-time one): the console asks
    the agent for their own before anything else."""

    teams: Mapped[list[Team]] = relationship(
        secondary=agent_teams, back_populates="agents", lazy="raise"
    )
