"""Conversations, interactions and service tickets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import (
    Channel,
    ConversationStatus,
    Direction,
    InteractionKind,
    TicketCategory,
    TicketPriority,
    TicketStatus,
)


class Conversation(Base):
    """A thread of interactions with one customer on one channel."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_channel_thread_key", "channel", "thread_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[Channel]
    status: Mapped[ConversationStatus] = mapped_column(default=ConversationStatus.OPEN)
    subject: Mapped[str | None] = mapped_column(String(500))
    thread_key: Mapped[str | None] = mapped_column(String(500))
    """The channel's own thread handle: chat id, call id, first Message-ID."""
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    participants: Mapped[list[str]] = mapped_column(default=list)
    """Handles taking part besides the customer (e-mail To/Cc), for thread membership."""
    related_conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    """A conversation this one points at but was kept apart from (e.g. a stranger's reply)."""
    last_message_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None]


class Interaction(Base):
    """One message, call, note or system event, inbound or outbound: the history."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_customer_occurred", "customer_id", "occurred_at"),
        # Reports: volume and channel mix by period, and each agent's conversations.
        Index("ix_interactions_occurred_channel", "occurred_at", "channel", "direction"),
        Index("ix_interactions_agent_occurred", "agent_id", "direction", "occurred_at",
              "conversation_id"),
        # Roll-up refresh: what arrived since the watermark.
        Index("ix_interactions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[Channel]
    direction: Mapped[Direction]
    kind: Mapped[InteractionKind] = mapped_column(default=InteractionKind.MESSAGE)
    subject: Mapped[str | None] = mapped_column(String(500))
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    """Sanitized HTML only; never the raw original."""
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    """Metadata of stored files: name, content type, size, blob key."""
    external_id: Mapped[str | None] = mapped_column(String(500), unique=True)
    """The channel's idempotency key; a second insert of it fails."""
    message_ref: Mapped[str | None] = mapped_column(String(500), index=True)
    """The channel's message id (an e-mail Message-ID), for threading replies."""
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ticket(Base):
    """A service request, numbered ``T-000123``, with its SLA clock."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status_priority", "status", "priority"),
        # A conversation's newest ticket (the inbox, every page): max(id) per conversation
        # from this index. Without it PostgreSQL walks the primary key backwards and
        # filters, reading about half the table per conversation.
        Index("ix_tickets_conversation_newest", "conversation_id", "id"),
        Index("ix_tickets_created_at", "created_at"),
        Index("ix_tickets_resolved_at", "resolved_at"),
        # Roll-up refresh: what changed since the watermark.
        Index("ix_tickets_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(20), unique=True)
    subject: Mapped[str] = mapped_column(String(500))
    category: Mapped[TicketCategory] = mapped_column(default=TicketCategory.INQUIRY)
    priority: Mapped[TicketPriority] = mapped_column(default=TicketPriority.NORMAL)
    status: Mapped[TicketStatus] = mapped_column(default=TicketStatus.NEW)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    tags: Mapped[list[str]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(Text)
    reopen_count: Mapped[int] = mapped_column(default=0)
    first_response_due_at: Mapped[datetime | None]
    resolution_due_at: Mapped[datetime | None]
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def ticket_number(ticket_id: int) -> str:
    """The human ticket number for a database id: 123 → ``T-000123``."""
    return f"T-{ticket_id:06d}"
