"""Phone calls: one record per call, kept up to date by the voice and CTI webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow


class CallRecord(Base):
    """A call from ring to hang-up: who, when, which menu choices, and how it ended.

    ``events`` is the call's log (menu choices, queueing, dialling, status callbacks),
    each ``{"at": ISO time, "event": name, …}``; ``path`` the menu nodes passed through.
    """

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("provider", "call_id", name="uq_calls_provider_call_id"),
        Index("ix_calls_customer_started", "customer_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(30))
    """``twilio`` (any TwiML provider) or ``cti`` (a PBX)."""
    call_id: Mapped[str] = mapped_column(String(200))
    direction: Mapped[str] = mapped_column(String(20), default="inbound")
    from_number: Mapped[str | None] = mapped_column(String(64))
    to_number: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(30), default="ringing")
    """``ringing``, ``in-progress``, ``queued``, ``completed``, ``busy``, ``no-answer``,
    ``failed`` or ``canceled`` (the provider's words)."""
    outcome: Mapped[str | None] = mapped_column(String(30))
    """What the caller got: ``self_service``, ``voicemail``, ``callback``, ``agent``,
    ``abandoned`` …"""
    language: Mapped[str | None] = mapped_column(String(20))
    path: Mapped[list[Any]] = mapped_column(default=list)
    events: Mapped[list[Any]] = mapped_column(default=list)
    recording_url: Mapped[str | None] = mapped_column(String(1000))
    recording_seconds: Mapped[int | None] = mapped_column(Integer)
    transcription: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
