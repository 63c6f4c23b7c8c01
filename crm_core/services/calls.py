"""Calls: who is calling (before they say a word), and the record of each call.

The voice and CTI webhooks must answer within seconds, so they read the caller here
directly (an indexed identity lookup) instead of waiting for the routing engine; what
the call produces for the customer's history (the call itself, a voicemail, a callback
request) still goes through the bus like any other message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ValidationError
from crm_core.models import (
    CallRecord,
    Customer,
    CustomerIdentity,
    IdentityKind,
    Ticket,
    TicketStatus,
    utcnow,
)
from crm_core.normalize import normalize_phone

OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
STATUS_WORDS = {
    "zh-CN": {"new": "已受理", "open": "处理中", "pending": "等待您的回复", "resolved": "已解决",
              "closed": "已关闭"},
    "en": {"new": "received", "open": "being worked on", "pending": "waiting for your reply",
           "resolved": "resolved", "closed": "closed"},
}
FINAL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}


@dataclass(frozen=True)
class Caller:
    """What we know about a calling number."""

    number: str | None
    """E.164, or None when the caller id was withheld or unreadable."""
    customer_id: int | None = None
    display_name: str = ""
    language: str | None = None
    ticket_number: str = ""
    ticket_status: str = ""
    """The latest ticket's status code (``open``, ``resolved`` …), empty without one."""
    has_open_ticket: bool = False
    custom: dict[str, Any] | None = None

    @property
    def known(self) -> bool:
        """Whether the number belongs to a customer."""
        return self.customer_id is not None

    def greeting_name(self, language: str) -> str:
        """How to address the caller: ``于先生`` / ``Mr. Yu`` when a salutation is on file
        (custom attribute ``salutation``), else the name on the record."""
        salutation = str((self.custom or {}).get("salutation") or "").strip()
        family = str((self.custom or {}).get("family_name") or "").strip()
        if salutation and family:
            if language.startswith("zh"):
                return f"{family}{salutation}"
            return f"{salutation} {family}"
        return self.display_name

    def status_words(self, language: str) -> str:
        """The latest ticket's status said in ``language``."""
        words = STATUS_WORDS["zh-CN" if language.startswith("zh") else "en"]
        return words.get(self.ticket_status, self.ticket_status)


def phone_or_none(raw: str | None, region: str) -> str | None:
    """E.164 of a caller id, or None for withheld (``anonymous``, ``+266696687``) or junk."""
    if not raw or raw.strip().lower() in {"anonymous", "unknown", "restricted", "private",
                                           "+266696687", "+7378742833", "+2562533"}:
        return None
    try:
        return normalize_phone(raw, region)
    except ValidationError:
        return None


async def find_caller(session: AsyncSession, raw_number: str | None, region: str) -> Caller:
    """The customer behind a caller id, with their latest ticket."""
    number = phone_or_none(raw_number, region)
    if number is None:
        return Caller(number=None)
    customer = await session.scalar(
        select(Customer)
        .join(CustomerIdentity, CustomerIdentity.customer_id == Customer.id)
        .where(CustomerIdentity.kind == IdentityKind.PHONE, CustomerIdentity.value == number,
               Customer.deleted_at.is_(None))
    )
    if customer is None:
        return Caller(number=number)
    while customer.merged_into_id is not None:  # follow merges to the surviving record
        survivor = await session.get(Customer, customer.merged_into_id)
        if survivor is None:
            break
        customer = survivor
    ticket = await session.scalar(
        select(Ticket).where(Ticket.customer_id == customer.id)
        .order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(1)
    )
    custom = dict(customer.custom_attributes or {})
    custom.setdefault("family_name", customer.family_name or "")
    return Caller(
        number=number,
        customer_id=customer.id,
        display_name=customer.display_name,
        language=customer.language,
        ticket_number=(ticket.number or "") if ticket is not None else "",
        ticket_status=ticket.status.value if ticket is not None else "",
        has_open_ticket=ticket is not None and ticket.status in OPEN_STATUSES,
        custom=custom,
    )


async def call_record(
    session: AsyncSession, provider: str, call_id: str, **create: Any
) -> CallRecord:
    """The record of a call, created on first sight (webhooks may arrive in any order)."""
    record = await session.scalar(
        select(CallRecord).where(CallRecord.provider == provider, CallRecord.call_id == call_id)
    )
    if record is None:
        record = CallRecord(provider=provider, call_id=call_id, path=[], events=[], **create)
        session.add(record)
        await session.flush()
    return record


def log_event(record: CallRecord, event: str, when: datetime | None = None, **detail: Any) -> None:
    """Append one event to the call's log."""
    entry = {"at": (when or utcnow()).isoformat(), "event": event,
             **{k: v for k, v in detail.items() if v is not None}}
    record.events = [*record.events, entry]
    record.updated_at = utcnow()


def finish(record: CallRecord, status: str, duration: int | None, when: datetime | None = None,
           ) -> None:
    """Apply a final status (``completed``, ``busy`` …) and the call's length."""
    record.status = status
    if status in FINAL_STATUSES:
        record.ended_at = record.ended_at or when or utcnow()
        if duration is not None:
            record.duration_seconds = duration
        if record.outcome is None:
            record.outcome = "abandoned" if status == "completed" else status
    record.updated_at = utcnow()
