"""Administering agents and teams: profile, role, teams, skills, capacity, access.

Complements ``crm_core.services.agents`` (create, passwords, authentication) with the
changes an administrator makes later. Every change is audited with the values before
and after; password hashes never appear in an audit entry. The last active admin cannot
be demoted or deactivated, so the console always keeps someone who can administer it.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import ConflictError, StateError, ValidationError
from crm_core.models import (
    Agent,
    AgentRole,
    AgentSession,
    PasswordResetToken,
    Team,
    utcnow,
)
from crm_core.normalize import normalize_email, normalize_phone
from crm_core.services import audit
from crm_core.services.agents import get_agent, set_password
from crm_core.services.sessions import RESET_LIFETIME, token_hash

MAX_LIST_ITEMS = 50
_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0OoIl1")


def generate_password(length: int = 16) -> str:
    """A random password without look-alike characters, to be shown once."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def check_phone(value: str | None, region: str) -> str | None:
    """Where calls reach the agent: E.164 (typed in any format), ``client:NAME`` or ``sip:…``."""
    cleaned = (value or "").strip()
    if not cleaned:
        return None
    if cleaned.startswith(("client:", "sip:")):
        if len(cleaned) > 100 or len(cleaned.split(":", 1)[1]) == 0:
            raise ValidationError("phone", value, "client:NAME or sip:address, up to 100 chars")
        return cleaned
    return normalize_phone(cleaned, region, field="phone")


def check_list(values: Sequence[str], field: str) -> list[str]:
    """Stripped, de-duplicated short words (skills, languages)."""
    result: list[str] = []
    for value in values:
        cleaned = str(value).strip()
        if not cleaned:
            continue
        if len(cleaned) > 50:
            raise ValidationError(field, value, "longer than 50 characters")
        if cleaned not in result:
            result.append(cleaned)
    if len(result) > MAX_LIST_ITEMS:
        raise ValidationError(field, len(result), f"at most {MAX_LIST_ITEMS} entries")
    return result


def agent_snapshot(agent: Agent) -> dict[str, Any]:
    """What an audit entry keeps of an agent (teams loaded; never the password hash)."""
    return {
        "display_name": agent.display_name, "email": agent.email, "phone": agent.phone,
        "role": agent.role.value, "skills": list(agent.skills or []),
        "languages": list(agent.languages or []), "capacity": agent.capacity,
        "active": agent.active, "teams": sorted(t.name for t in agent.teams),
    }


async def _other_active_admins(session: AsyncSession, agent_id: int) -> int:
    return int(await session.scalar(
        select(func.count()).select_from(Agent).where(
            Agent.role == AgentRole.ADMIN, Agent.active.is_(True), Agent.id != agent_id)) or 0)


async def update_agent(
    session: AsyncSession,
    agent_id: int,
    *,
    actor: str,
    region: str,
    display_name: str,
    email: str | None,
    phone: str | None,
    role: AgentRole,
    team_ids: Sequence[int],
    skills: Sequence[str],
    languages: Sequence[str],
    capacity: int,
    active: bool,
) -> Agent:
    """Change an agent's profile, role, teams and capacity; ends their sessions when they
    are deactivated. Refuses to leave the console without an active admin."""
    agent = await get_agent(session, agent_id)
    before = agent_snapshot(agent)
    name = (display_name or "").strip()
    if not name or len(name) > 200:
        raise ValidationError("display_name", display_name, "1 to 200 characters")
    if capacity < 0 or capacity > 1000:
        raise ValidationError("capacity", capacity, "must be 0 to 1000")
    cleaned_email = normalize_email(email) if email and email.strip() else None
    if cleaned_email:
        holder = await session.scalar(select(Agent).where(
            func.lower(Agent.email) == cleaned_email, Agent.id != agent.id))
        if holder is not None:
            raise ConflictError("email", cleaned_email, holder.id, holder.display_name)
    losing_admin = agent.role == AgentRole.ADMIN and agent.active and (
        role != AgentRole.ADMIN or not active)
    if losing_admin and await _other_active_admins(session, agent.id) == 0:
        raise StateError("this is the last active admin: make another agent admin first")
    teams = list(await session.scalars(select(Team).where(Team.id.in_(list(team_ids))))) \
        if team_ids else []
    if len(teams) != len(set(team_ids)):
        raise ValidationError("teams", list(team_ids), "no such team")
    agent.display_name = name
    agent.email = cleaned_email
    agent.phone = check_phone(phone, region)
    agent.role = AgentRole(role)
    agent.skills = check_list(skills, "skills")
    agent.languages = check_list(languages, "languages")
    agent.capacity = capacity
    agent.active = active
    agent.teams = teams
    old, new = audit.diff(before, agent_snapshot(agent))
    if new:
        agent.updated_at = utcnow()
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type="agent",
                     entity_id=agent.id, before=old, after=new)
    if not active:
        await session.execute(delete(AgentSession).where(AgentSession.agent_id == agent.id))
    return agent


async def create_agent_account(
    session: AsyncSession,
    *,
    actor: str,
    region: str,
    login: str,
    display_name: str,
    password: str,
    email: str | None,
    phone: str | None,
    role: AgentRole,
    team_ids: Sequence[int],
    skills: Sequence[str],
    languages: Sequence[str],
    capacity: int,
    password_change_required: bool = False,
) -> Agent:
    """Create an agent with the profile an administrator fills in: ``create_agent`` (audited
    ``create``), then the fields it does not take (phone, checked e-mail), audited as an
    ``update`` when given. ``password_change_required``: the password is a one-time one
    the administrator passes on; the agent chooses their own at the first sign-in."""
    from crm_core.services.agents import create_agent

    teams = list(await session.scalars(select(Team).where(Team.id.in_(list(team_ids))))) \
        if team_ids else []
    if len(teams) != len(set(team_ids)):
        raise ValidationError("teams", list(team_ids), "no such team")
    if capacity < 0 or capacity > 1000:
        raise ValidationError("capacity", capacity, "must be 0 to 1000")
    agent = await create_agent(
        session, login=login, display_name=display_name, password=password, actor=actor,
        role=role, skills=check_list(skills, "skills"),
        languages=check_list(languages, "languages"), capacity=capacity, teams=teams)
    agent.password_change_required = password_change_required
    return await update_agent(
        session, agent.id, actor=actor, region=region, display_name=agent.display_name,
        email=email, phone=phone, role=role, team_ids=[t.id for t in teams],
        skills=agent.skills, languages=agent.languages, capacity=capacity, active=True)


async def reset_to_generated_password(session: AsyncSession, agent_id: int, *,
                                      actor: str) -> str:
    """Give an agent a new random password (returned once, stored only as a hash); their
    sessions end and a lock-out is lifted."""
    password = generate_password()
    await set_password(session, agent_id, password, actor=actor, change_required=True)
    agent = await get_agent(session, agent_id)
    agent.failed_logins = 0
    agent.locked_until = None
    await session.execute(delete(AgentSession).where(AgentSession.agent_id == agent_id))
    return password


async def issue_setup_token(session: AsyncSession, agent_id: int, *, actor: str) -> str:
    """A one-time link token with which the agent chooses a password (valid as long as a
    mailed reset link); the administrator hands it over."""
    agent = await get_agent(session, agent_id)
    if not agent.active:
        raise StateError(f"agent {agent.login!r} is not active")
    token = secrets.token_urlsafe(32)
    session.add(PasswordResetToken(token_hash=token_hash(token), agent_id=agent.id,
                                   expires_at=utcnow() + RESET_LIFETIME))
    audit.record(session, actor=actor, action="reset_link", entity_type="agent",
                 entity_id=agent.id)
    await session.flush()
    return token


async def list_teams(session: AsyncSession) -> list[Team]:
    """Every team, by name."""
    return list(await session.scalars(select(Team).order_by(Team.name)))


async def team_sizes(session: AsyncSession) -> dict[int, int]:
    """How many active agents each team has."""
    from crm_core.models import agent_teams

    rows = await session.execute(
        select(agent_teams.c.team_id, func.count())
        .join(Agent, Agent.id == agent_teams.c.agent_id)
        .where(Agent.active.is_(True))
        .group_by(agent_teams.c.team_id))
    return {team_id: int(count) for team_id, count in rows}


async def update_team(session: AsyncSession, team_id: int, *, name: str,
                      description: str | None, actor: str) -> Team:
    """Rename a team or change its description (routing rules name teams: keep them in
    step)."""
    team = await session.get(Team, team_id)
    if team is None:
        from crm_core.errors import NotFoundError

        raise NotFoundError("team", team_id)
    cleaned = (name or "").strip()
    if not cleaned or len(cleaned) > 100:
        raise ValidationError("name", name, "a team needs a name of 1 to 100 characters")
    existing = await session.scalar(select(Team).where(Team.name == cleaned, Team.id != team.id))
    if existing is not None:
        raise ConflictError("team", cleaned, existing.id, existing.name)
    before = {"name": team.name, "description": team.description}
    team.name = cleaned
    team.description = (description or "").strip() or None
    old, new = audit.diff(before, {"name": team.name, "description": team.description})
    if new:
        await session.flush()
        audit.record(session, actor=actor, action="update", entity_type="team",
                     entity_id=team.id, before=old, after=new)
    return team
