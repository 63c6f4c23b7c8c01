"""What channel adapters may record besides envelopes: progress cursors and quarantine.

Adapters never touch customers or tickets; they only need to remember how far they got
in a source and to set aside input they could not read, for an admin to look at.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from crm_core.db import Database
from crm_core.models import Channel, ChannelCursor, QuarantinedMessage, utcnow

QUARANTINED = "quarantined"
REPROCESSED = "reprocessed"
DISCARDED = "discarded"


async def load_cursor(database: Database, channel: Channel, source: str) -> dict[str, Any]:
    """The saved state of a source, or an empty dict for a new one."""
    async with database.sessions() as session:
        state = await session.scalar(
            select(ChannelCursor.state).where(
                ChannelCursor.channel == channel, ChannelCursor.source == source
            )
        )
    return dict(state or {})


async def save_cursor(
    database: Database, channel: Channel, source: str, state: dict[str, Any]
) -> None:
    """Replace the saved state of a source (call only after its items are on the bus)."""
    async with database.transaction() as session:
        cursor = await session.scalar(
            select(ChannelCursor).where(
                ChannelCursor.channel == channel, ChannelCursor.source == source
            )
        )
        if cursor is None:
            session.add(ChannelCursor(channel=channel, source=source, state=dict(state)))
        else:
            cursor.state = dict(state)
            cursor.updated_at = utcnow()


async def quarantine(
    database: Database,
    *,
    channel: Channel,
    source: str,
    source_ref: str | None,
    raw_ref: str,
    size: int,
    reason: str,
) -> int:
    """Set an unreadable item aside; the same raw bytes are quarantined only once."""
    async with database.transaction() as session:
        existing = await session.scalar(
            select(QuarantinedMessage).where(
                QuarantinedMessage.raw_ref == raw_ref,
                QuarantinedMessage.status == QUARANTINED,
            )
        )
        if existing is not None:
            existing.attempts += 1
            existing.reason = reason[:4000]
            return existing.id
        row = QuarantinedMessage(
            channel=channel, source=source, source_ref=source_ref, raw_ref=raw_ref,
            size=size, reason=reason[:4000], attempts=1,
        )
        session.add(row)
        await session.flush()
        return row.id


async def list_quarantine(
    database: Database, *, status: str | None = QUARANTINED, limit: int = 100
) -> list[QuarantinedMessage]:
    """Quarantined items, newest first."""
    async with database.sessions() as session:
        query = select(QuarantinedMessage).order_by(QuarantinedMessage.id.desc()).limit(limit)
        if status is not None:
            query = query.where(QuarantinedMessage.status == status)
        return list(await session.scalars(query))


async def resolve_quarantine(database: Database, item_id: int, status: str, actor: str) -> bool:
    """Mark an item re-processed or discarded; False when it was not quarantined."""
    async with database.transaction() as session:
        row = await session.get(QuarantinedMessage, item_id)
        if row is None or row.status != QUARANTINED:
            return False
        row.status = status
        row.resolved_at = utcnow()
        row.resolved_by = actor
        return True
