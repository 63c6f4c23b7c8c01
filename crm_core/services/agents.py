"""Agents and teams: accounts with argon2 password hashes, roles, skills and capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_core.errors import ConflictError, NotFoundError, ValidationError
from crm_core.models import Agent, AgentRole, Availability, Team, utcnow
from crm_core.services import audit

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, refusing passwords too short to be safe."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            "password", "********", f"must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_agent(
    session: AsyncSession,
    *,
    login: str,
    display_name: str,
    password: str,
    actor: str,
    role: AgentRole = AgentRole.AGENT,
    email: str | None = None,
    skills: Sequence[str] = (),
    languages: Sequence[str] = (),
    capacity: int = 10,
    availability: Availability = Availability.OFFLINE,
    teams: Sequence[Team] = (),
) -> Agent:
    """Create a console account; the login must be free."""
    login = login.strip().lower()
    if not login or len(login) > 100:
        raise ValidationError("login", login, "must be 1 to 100 characters")
    if capacity < 0:
        raise ValidationError("capacity", capacity, "must not be negative")
    existing = await session.scalar(select(Agent).where(Agent.login == login))
    if existing is not None:
        raise ConflictError("login", login, existing.id, existing.display_name)
    agent = Agent(
        login=login,
        display_name=display_name.strip() or login,
        email=email,
        password_hash=await asyncio.to_thread(hash_password, password),
        role=role,
        skills=list(skills),
        languages=list(languages),
        capacity=capacity,
        availability=availability,
        teams=list(teams),
    )
    session.add(agent)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="agent",
        entity_id=agent.id,
        after={"login": login, "role": role.value, "teams": [t.name for t in teams]},
    )
    return agent


async def set_password(session: AsyncSession, agent_id: int, password: str, *, actor: str,
                       change_required: bool = False) -> None:
    """Replace an agent's password (the hash only is stored, and never audited).
    ``change_required``: an administrator gave it, the agent must choose their own."""
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFoundError("agent", agent_id)
    agent.password_hash = await asyncio.to_thread(hash_password, password)
    agent.password_change_required = change_required
    audit.record(
        session, actor=actor, action="password", entity_type="agent", entity_id=agent_id
    )


async def change_own_password(session: AsyncSession, agent_id: int, current: str,
                              new: str) -> None:
    """An agent replaces their password: the current one must match, the new one must be
    long enough and differ from it. Clears ``password_change_required``."""
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFoundError("agent", agent_id)
    if not await asyncio.to_thread(verify_password, agent.password_hash, current):
        raise ValidationError("current_password", "********", "is not your current password")
    if new == current:
        raise ValidationError("new_password", "********", "must differ from the current one")
    await set_password(session, agent_id, new, actor=agent.login)


async def authenticate(session: AsyncSession, login: str, password: str) -> Agent | None:
    """The active agent with this login and password, or ``None``."""
    agent = await session.scalar(select(Agent).where(Agent.login == login.strip().lower()))
    # argon2 takes tens of milliseconds: off the event loop, and a dummy verification
    # for unknown logins so the answer time does not tell which logins exist.
    stored = agent.password_hash if agent is not None else _dummy_hash()
    matches = await asyncio.to_thread(verify_password, stored, password)
    if agent is None or not agent.active or not matches:
        return None
    agent.last_login_at = utcnow()
    return agent


async def create_team(
    session: AsyncSession, name: str, *, actor: str, description: str | None = None
) -> Team:
    """Create a team; names are unique."""
    cleaned = name.strip()
    if not cleaned:
        raise ValidationError("name", name, "a team needs a name")
    existing = await session.scalar(select(Team).where(Team.name == cleaned))
    if existing is not None:
        raise ConflictError("team", cleaned, existing.id, existing.name)
    team = Team(name=cleaned, description=description)
    session.add(team)
    await session.flush()
    audit.record(
        session, actor=actor, action="create", entity_type="team", entity_id=team.id,
        after={"name": cleaned},
    )
    return team


async def get_agent(session: AsyncSession, agent_id: int) -> Agent:
    """An agent with teams loaded."""
    agent = await session.scalar(
        select(Agent).where(Agent.id == agent_id).options(selectinload(Agent.teams))
    )
    if agent is None:
        raise NotFoundError("agent", agent_id)
    return agent
