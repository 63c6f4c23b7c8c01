"""Console logins: sessions, lock-out after repeated failures, password reset tokens.

Session and reset tokens are random 32-byte values handed to the browser; only their
SHA-256 is stored. A login that keeps failing first needs a challenge, then is locked
for a while; a success clears the count.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Agent, AgentSession, PasswordResetToken, utcnow
from crm_core.services import audit
from crm_core.services.agents import authenticate, set_password

SESSION_LIFETIME = timedelta(hours=12)
SESSION_IDLE = timedelta(hours=2)
CHALLENGE_AFTER = 3
LOCK_AFTER = 10
LOCK_FOR = timedelta(minutes=15)
RESET_LIFETIME = timedelta(hours=1)
MIN_PASSWORD_LENGTH = 10


def token_hash(token: str) -> str:
    """What is stored for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt."""

    agent: Agent | None
    locked_until: datetime | None = None
    needs_challenge: bool = False


async def needs_challenge(session: AsyncSession, login: str) -> bool:
    """Whether this login has failed often enough to need the challenge."""
    failures = await session.scalar(
        select(Agent.failed_logins).where(Agent.login == login.strip().lower())
    )
    return (failures or 0) >= CHALLENGE_AFTER


async def attempt_login(
    session: AsyncSession, login: str, password: str, *, now: datetime | None = None
) -> LoginResult:
    """Check a password, counting failures; a locked account is refused unchecked."""
    moment = now or utcnow()
    name = login.strip().lower()
    agent = await session.scalar(select(Agent).where(Agent.login == name))
    if agent is not None and agent.locked_until is not None and agent.locked_until > moment:
        return LoginResult(None, locked_until=agent.locked_until)
    found = await authenticate(session, name, password)
    if found is not None:
        found.failed_logins = 0
        found.locked_until = None
        audit.record(session, actor=found.login, action="login", entity_type="agent",
                     entity_id=found.id)
        return LoginResult(found)
    if agent is None:
        return LoginResult(None)
    agent.failed_logins += 1
    if agent.failed_logins >= LOCK_AFTER:
        agent.locked_until = moment + LOCK_FOR
        agent.failed_logins = CHALLENGE_AFTER  # after the lock: still the challenge
        audit.record(session, actor="system", action="lock", entity_type="agent",
                     entity_id=agent.id, after={"until": agent.locked_until.isoformat()})
    return LoginResult(None, locked_until=agent.locked_until if agent.locked_until and
                       agent.locked_until > moment else None,
                       needs_challenge=agent.failed_logins >= CHALLENGE_AFTER)


async def create_session(
    session: AsyncSession, agent: Agent, *, user_agent: str | None = None,
    remote_addr: str | None = None,
) -> tuple[str, AgentSession]:
    """A new session for ``agent``: the cookie value and the stored row."""
    token = secrets.token_urlsafe(32)
    row = AgentSession(
        token_hash=token_hash(token), agent_id=agent.id, csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + SESSION_LIFETIME,
        user_agent=(user_agent or "")[:300] or None, remote_addr=(remote_addr or "")[:100] or None,
    )
    session.add(row)
    await session.flush()
    return token, row


async def load_session(
    session: AsyncSession, token: str, *, now: datetime | None = None
) -> tuple[AgentSession, Agent] | None:
    """The live session behind a cookie value and its active agent; touches it."""
    if not token or len(token) > 200:
        return None
    moment = now or utcnow()
    row = await session.scalar(
        select(AgentSession).where(AgentSession.token_hash == token_hash(token))
    )
    if row is None or row.expires_at <= moment or moment - row.last_seen_at > SESSION_IDLE:
        return None
    agent = await session.get(Agent, row.agent_id)
    if agent is None or not agent.active:
        return None
    if moment - row.last_seen_at > timedelta(minutes=1):  # no write on every request
        await session.execute(update(AgentSession).where(AgentSession.id == row.id)
                              .values(last_seen_at=moment))
    return row, agent


async def end_other_sessions(session: AsyncSession, agent_id: int, keep_token: str) -> None:
    """End every session of the agent but the one behind ``keep_token`` (after a password
    change: whoever knew the old password is signed out elsewhere)."""
    await session.execute(delete(AgentSession).where(
        AgentSession.agent_id == agent_id, AgentSession.token_hash != token_hash(keep_token)))


async def end_session(session: AsyncSession, token: str) -> None:
    """Log out: the session is gone."""
    await session.execute(delete(AgentSession).where(AgentSession.token_hash == token_hash(token)))


async def issue_reset_token(session: AsyncSession, login_or_email: str) -> tuple[Agent, str] | None:
    """A reset token for the agent with this login or e-mail; None when there is none
    (the caller answers the same either way, so logins cannot be probed)."""
    value = login_or_email.strip().lower()
    agent = await session.scalar(
        select(Agent).where(Agent.active.is_(True),
                            (Agent.login == value) | (Agent.email == value))
    )
    if agent is None or not agent.email:
        return None
    token = secrets.token_urlsafe(32)
    session.add(PasswordResetToken(token_hash=token_hash(token), agent_id=agent.id,
                                   expires_at=utcnow() + RESET_LIFETIME))
    await session.flush()
    return agent, token


async def reset_password(
    session: AsyncSession, token: str, new_password: str, *, now: datetime | None = None
) -> Agent | None:
    """Set a new password with a valid reset token (used once); ends every session."""
    if len(new_password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"at least {MIN_PASSWORD_LENGTH} characters")
    moment = now or utcnow()
    row = await session.scalar(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash(token))
    )
    if row is None or row.used_at is not None or row.expires_at <= moment:
        return None
    row.used_at = moment
    agent = await session.get(Agent, row.agent_id)
    if agent is None or not agent.active:
        return None
    await set_password(session, agent.id, new_password, actor=agent.login)
    agent.failed_logins = 0
    agent.locked_until = None
    await session.execute(delete(AgentSession).where(AgentSession.agent_id == agent.id))
    return agent
