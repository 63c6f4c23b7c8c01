"""A durable work queue in the database: the embedded bus between channels and routing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow


class QueueEntry(Base):
    """One item waiting to be processed, leased while a worker has it, dead after N tries.

    An entry is deleted when acknowledged, ideally in the transaction that recorded its
    effects, so on the database bus a message is processed exactly once.
    """

    __tablename__ = "queue_entries"
    __table_args__ = (
        UniqueConstraint("topic", "key"),
        Index("ix_queue_entries_claim", "topic", "status", "available_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(50))
    key: Mapped[str] = mapped_column(String(500))
    """The idempotency key: publishing the same key twice queues it once."""
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="ready")
    """``ready`` (waiting or leased) or ``dead`` (gave up; an admin may replay it)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
