"""API tokens: issued once in clear, stored as SHA-256, scoped, revocable, last use kept."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import Agent, ApiToken, utcnow
from crm_core.services import audit

TOKEN_PREFIX = "cct_"
SCOPES = {
    "customers:read": "Read customers and their identities",
    "customers:write": "Create, change, merge and delete customers",
    "conversations:read": "Read conversations and messages",
    "conversations:write": "Send replies",
    "tickets:read": "Read tickets",
    "tickets:write": "Create and change tickets",
    "campaigns:read": "Read campaigns and feedback",
    "campaigns:write": "Trigger campaigns",
    "reports:read": "Read report counts",
    "webhooks:manage": "Manage webhook subscriptions",
    "pii:export": "Export all data of one customer",
    "pii:erase": "Erase a customer for good",
}
"""Every scope a token may carry, with what it allows."""
LAST_USE_GRANULARITY = timedelta(seconds=60)
"""``last_used_at`` is written at most once a minute per token (no write per request)."""


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """Known scopes only, de-duplicated and sorted; ValidationError otherwise."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationError("scopes", ", ".join(unknown), "unknown scope")
    if not scopes:
        raise ValidationError("scopes", "", "name at least one scope")
    return sorted(set(scopes))


@dataclass(frozen=True)
class IssuedToken:
    """A new token: the row, and the clear value shown exactly once."""

    row: ApiToken
    token: str


async def create_token(
    session: AsyncSession, *, name: str, scopes: list[str], actor: str,
    agent_id: int | None = None, rate_limit_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Issue a token; the clear value is in the result only, never stored or logged."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("name", name, "give a name of 1 to 100 characters")
    checked = check_scopes(scopes)
    if agent_id is not None and await session.get(Agent, agent_id) is None:
        raise NotFoundError("agent", agent_id)
    if rate_limit_per_minute is not None and not 1 <= rate_limit_per_minute <= 1_000_000:
        raise ValidationError("rate_limit_per_minute", rate_limit_per_minute,
                              "must be between 1 and 1000000")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), prefix=token[:12], scopes=checked,
                   agent_id=agent_id, rate_limit_per_minute=rate_limit_per_minute,
                   created_by=actor, expires_at=expires_at)
    session.add(row)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type="api_token",
                 entity_id=row.id, after={"name": name, "scopes": checked,
                                          "agent_id": agent_id, "prefix": row.prefix})
    return IssuedToken(row, token)


async def find_token(session: AsyncSession, token: str, *,
                     now: datetime | None = None) -> ApiToken | None:
    """The live token behind a clear value (not revoked, not expired); reads only."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    now = now or utcnow()
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return row


class TokenCache:
    """Live tokens by hash, kept ``seconds`` after they were read from the database, so
    an API request costs no database round trip for its token.

    The token is still checked on every request: its hash must match a cached live row,
    which must not be expired at that moment. Revoking a token in this process drops
    every cached entry at once; a revocation made by another process (the CLI, another
    web node) takes effect here within ``seconds``.
    """

    def __init__(self, seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.monotonic = monotonic
        self._rows: dict[str, tuple[float, ApiToken]] = {}

    def get(self, token: str, now: datetime) -> ApiToken | None:
        """The cached live row for a clear token, or ``None`` (read the database then)."""
        key = hash_token(token)
        entry = self._rows.get(key)
        if entry is None:
            return None
        expires, row = entry
        if self.monotonic() >= expires or row.revoked_at is not None or (
                row.expires_at is not None and row.expires_at <= now):
            del self._rows[key]
            return None
        return row

    def put(self, token: str, row: ApiToken) -> None:
        """Remember a live row just read from the database."""
        if len(self._rows) > 10_000:  # many tokens: start over rather than grow
            self._rows.clear()
        self._rows[hash_token(token)] = (self.monotonic() + self.seconds, row)

    def forget(self) -> None:
        """Drop every entry (a token was revoked in this process)."""
        self._rows.clear()


TOKENS = TokenCache()
"""The process's cache of live tokens."""


def needs_touch(row: ApiToken, now: datetime) -> bool:
    """Whether the last use is older than the granularity (and should be written)."""
    return row.last_used_at is None or now - row.last_used_at >= LAST_USE_GRANULARITY


async def touch_token(session: AsyncSession, token_id: int, *, now: datetime,
                      remote: str | None) -> None:
    """Note a use of the token (time and address)."""
    await session.execute(update(ApiToken).where(ApiToken.id == token_id)
                          .values(last_used_at=now, last_used_ip=(remote or "")[:100]))


async def authenticate(session: AsyncSession, token: str, *, now: datetime | None = None,
                       remote: str | None = None) -> ApiToken | None:
    """:func:`find_token`, with the last use noted in the same (write) session."""
    now = now or utcnow()
    row = await find_token(session, token, now=now)
    if row is not None and needs_touch(row, now):
        await touch_token(session, row.id, now=now, remote=remote)
        row.last_used_at = now
    return row


async def revoke_token(session: AsyncSession, token_id: int, *, actor: str) -> ApiToken:
    """Switch a token off for good (idempotent)."""
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError("api_token", token_id)
    TOKENS.forget()
    # Again once committed: a request between here and the commit may have re-read it.
    event.listen(session.sync_session, "after_commit", lambda _s: TOKENS.forget(), once=True)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor=actor, action="revoke", entity_type="api_token",
                     entity_id=row.id, before={"revoked_at": None},
                     after={"revoked_at": row.revoked_at})
        await session.flush()
    return row


async def list_tokens(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiToken]:
    """Every token, newest first."""
    stmt = select(ApiToken).order_by(ApiToken.id.desc())
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return list(await session.scalars(stmt))
