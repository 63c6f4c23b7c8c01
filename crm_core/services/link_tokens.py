"""One-time tokens that let a customer tie a new channel (Telegram) to their record.

The token travels to the customer on a channel we already trust (an e-mail, the web
chat) as a deep link; whoever comes back with it is that customer. Only a hash is
stored, a token works once, and it expires.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import CustomerLinkToken, utcnow

DEFAULT_TTL = timedelta(days=7)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_link_token(
    session: AsyncSession, customer_id: int, *, purpose: str = "telegram",
    ttl: timedelta = DEFAULT_TTL,
) -> str:
    """A fresh token for ``customer_id`` (URL- and Telegram-deep-link-safe, 22 chars)."""
    token = secrets.token_urlsafe(16)
    session.add(CustomerLinkToken(
        token_hash=_hash(token), customer_id=customer_id, purpose=purpose,
        expires_at=utcnow() + ttl,
    ))
    await session.flush()
    return token


async def redeem_link_token(
    session: AsyncSession, token: str, *, used_by: str, now: datetime | None = None
) -> int | None:
    """The customer a valid token belongs to, marking it used; None when unknown,
    expired or already used."""
    if not token or len(token) > 64:
        return None
    row = await session.scalar(
        select(CustomerLinkToken).where(CustomerLinkToken.token_hash == _hash(token))
    )
    moment = now or utcnow()
    if row is None or row.used_at is not None or row.expires_at <= moment:
        return None
    row.used_at = moment
    row.used_by = used_by[:200]
    return row.customer_id
