"""Channel intake state: where each inbound source stopped, and messages set aside.

``ChannelCursor`` is a small key/value record per source (an IMAP folder's UIDVALIDITY
and last UID, a Telegram update offset) saved only after what it covers is durably on
the bus. ``QuarantinedMessage`` keeps input that could not be turned into an envelope —
its raw bytes are in the blob store — until an admin re-processes or discards it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import Channel


class ChannelCursor(Base):
    """Progress of one inbound source (for instance ``email`` / ``support:INBOX``)."""

    __tablename__ = "channel_cursors"
    __table_args__ = (UniqueConstraint("channel", "source", name="uq_channel_cursor"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[Channel]
    source: Mapped[str] = mapped_column(String(300))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuarantinedMessage(Base):
    """Inbound input that could not be parsed; visible to admins, re-processable."""

    __tablename__ = "quarantined_messages"
    __table_args__ = (Index("ix_quarantine_status", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[Channel]
    source: Mapped[str] = mapped_column(String(300))
    """Where it came from: mailbox and folder, import file, webhook name."""
    source_ref: Mapped[str | None] = mapped_column(String(500))
    """The item within the source: IMAP UIDVALIDITY/UID, file path and index."""
    raw_ref: Mapped[str] = mapped_column(String(200))
    """Blob key of the raw bytes."""
    size: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="quarantined")
    """``quarantined``, ``reprocessed`` or ``discarded``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))


class CustomerLinkToken(Base):
    """A one-time token that ties a new channel handle to a known customer.

    Sent to the customer by e-mail or shown in the web chat as a Telegram deep link
    (``t.me/<bot>?start=<token>``); only its SHA-256 is stored.
    """

    __tablename__ = "customer_link_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(30), default="telegram")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(String(200))
