"""The channel-neutral envelopes that travel on the bus: inbound and outbound messages.

Adapters build an ``InboundMessage`` from their protocol's payload and hand it to the
bus; the routing engine never sees a protocol. Envelopes are frozen and serialize to
JSON for the durable bus (database table or Redis stream).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crm_core.models import Channel


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttachmentRef(_Frozen):
    """A file already stored in the blob store; the envelope carries only its reference."""

    blob_key: str
    filename: str
    content_type: str = "application/octet-stream"
    size: int = Field(ge=0)


class SenderHandles(_Frozen):
    """Every handle the sender was seen with; at least one must be given."""

    email: str | None = None
    phone: str | None = None
    telegram_id: str | None = None
    visitor_id: str | None = None
    display_name: str | None = None


class ThreadHints(_Frozen):
    """What the channel knows about the thread a message belongs to."""

    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    chat_id: str | None = None
    call_id: str | None = None
    recipients: tuple[str, ...] = ()
    """Other addresses the message went to (To/Cc), for e-mail participant checks."""


class InboundMessage(_Frozen):
    """One message from a customer, as any channel delivers it."""

    channel: Channel
    idempotency_key: str = Field(min_length=1, max_length=500)
    """Unique per source item (IMAP UIDVALIDITY+UID, Telegram update_id, CallSid+event …)."""
    received_at: AwareDatetime
    sender: SenderHandles
    thread: ThreadHints = ThreadHints()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    """Already sanitized by the adapter; raw HTML never travels."""
    attachments: tuple[AttachmentRef, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)
    raw_ref: str | None = None
    """Blob key of the raw original (the .eml, the JSON update), for audit and replay."""
    automated: str | None = Field(default=None, max_length=50)
    """Set when no person wrote this (``auto_reply``, ``bounce``, ``list``): it is logged,
    but opens or updates no ticket, is assigned to nobody and is never auto-answered."""
    bounced_addresses: tuple[str, ...] = ()
    """For a bounce: the addresses that could not be delivered to."""

    def to_json(self) -> str:
        """The envelope as JSON text, for the bus."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> InboundMessage:
        """Parse an envelope written by ``to_json``."""
        return cls.model_validate_json(data)


class OutboundMessage(_Frozen):
    """A reply or automated message to send on a customer's channel."""

    outbox_id: int
    channel: Channel
    to: SenderHandles
    thread: ThreadHints = ThreadHints()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
