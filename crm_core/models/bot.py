"""Self-service: knowledge-base articles, bot sessions, unanswered questions, edited flows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow


class KnowledgeArticle(Base):
    """One answer of the knowledge base in one language (``zh-CN`` or ``en``).

    ``questions`` are ways customers ask it, one per line; ``keywords`` are extra words
    and synonyms (comma or line separated) that point to it.
    """

    __tablename__ = "kb_articles"
    __table_args__ = (Index("ix_kb_articles_language", "language", "enabled"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    language: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300))
    questions: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[str] = mapped_column(Text, default="")
    answer: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BotSession(Base):
    """A customer's walk through a bot flow on one channel (a call, a chat conversation).

    ``status``: ``bot`` (the bot answers), ``handoff`` (waiting for an agent), ``agent``
    (an agent joined: the bot is silent), ``ended`` (the flow ended). ``transcript`` is
    ``[{"at", "from": "customer"|"bot", "text"}]``; ``fields`` what ``ask`` nodes
    collected; ``path`` the nodes passed.
    """

    __tablename__ = "bot_sessions"
    __table_args__ = (
        UniqueConstraint("channel", "session_key", name="uq_bot_sessions_channel_key"),
        Index("ix_bot_sessions_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    session_key: Mapped[str] = mapped_column(String(200))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    flow: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="bot")
    outcome: Mapped[str | None] = mapped_column(String(30))
    """``answered``, ``ended``, ``ticket``, ``callback``, ``handoff``, ``agent`` …"""
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    path: Mapped[list[Any]] = mapped_column(default=list)
    transcript: Mapped[list[Any]] = mapped_column(default=list)
    handoff_team: Mapped[str | None] = mapped_column(String(200))
    handoff_at: Mapped[datetime | None] = mapped_column()
    handoff_deadline: Mapped[datetime | None] = mapped_column()
    agent_joined_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class UnansweredQuestion(Base):
    """A free-text question the knowledge base could not answer confidently."""

    __tablename__ = "kb_unanswered"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(20))
    question: Mapped[str] = mapped_column(String(1000))
    normalized: Mapped[str] = mapped_column(String(1000), index=True)
    score: Mapped[float] = mapped_column(default=0.0)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("bot_sessions.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class FlowDocument(Base):
    """The flows edited in the console (TOML); the newest row wins over config/flows.toml."""

    __tablename__ = "bot_flow_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    edited_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
