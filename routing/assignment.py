"""Agent assignment: the customer's owner first, then a team member by round robin or load.

Who can take a conversation
    An agent who is active, ``online`` and below capacity, where load is the number of
    open conversations assigned to them and ``capacity`` is the most they take at once.
    Within a team the agent must also speak the customer's language (an agent without
    languages speaks any; ``zh`` matches ``zh-CN``: primary subtags are compared) and have
    every required skill. The owner agent (sticky assignment) needs only the first three.

Strategies
    ``round_robin`` continues after the team's cursor (``Team.last_assigned_agent_id``)
    in agent id order, wrapping around, and moves the cursor. Without a team there is no
    cursor to keep, so it falls back to ``least_loaded``: the fewest open conversations,
    ties to the lowest id.

Concurrency
    Workers on PostgreSQL may assign at the same time. The team row is locked
    (``SELECT … FOR NO KEY UPDATE``: it does not block rows that merely reference the
    team or agent) before loads are counted and the cursor moves, so two
    workers choosing in one team take turns, and the second sees the first's assignment
    once it commits (READ COMMITTED, PostgreSQL's default). Without a team a transaction
    advisory lock plays the team row's part; a sticky owner's agent row is locked the
    same way. The locks last until the caller's transaction ends: this module never
    commits. SQLite allows one writer at a time, so it needs no locks.

    Remaining gap: a sticky assignment locks only the owner's row, so a team assignment
    running at that very moment may count the owner's load without it, and the owner can
    end up one conversation over capacity. Capacity is a soft limit for that reason.
    When nobody who could take the conversation is online, no lock is taken at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.models import Agent, Availability, Conversation, ConversationStatus, Team, agent_teams

STRATEGIES: tuple[str, ...] = ("round_robin", "least_loaded")
NO_TEAM_LOCK_KEY = 0x63635F6173736E  # "cc_assn": serializes assignment without a team

REASON_STICKY = "sticky-owner"
REASON_ROUND_ROBIN = "round-robin"
REASON_LEAST_LOADED = "least-loaded"
REASON_NO_AGENT = "queue:no-agent-available"
REASON_UNKNOWN_TEAM = "queue:unknown-team"


@dataclass
class Assignment:
    """Who gets a conversation: an agent (and their team), or a team's unassigned queue.

    ``reason`` says why: ``sticky-owner``, ``round-robin``, ``least-loaded``,
    ``queue:no-agent-available`` or ``queue:unknown-team``.
    """

    agent_id: int | None
    team_id: int | None
    reason: str


def _primary(language: str) -> str:
    return language.strip().replace("_", "-").split("-")[0].casefold()


def speaks(agent: Agent, language: str | None) -> bool:
    """Whether an agent can serve a customer in ``language`` (no languages = any)."""
    if not language or not agent.languages:
        return True
    wanted = _primary(language)
    return any(_primary(spoken) == wanted for spoken in agent.languages if spoken)


def has_skills(agent: Agent, required: Sequence[str]) -> bool:
    """Whether an agent has every required skill (case-insensitive)."""
    skills = {s.casefold() for s in agent.skills or ()}
    return all(r.casefold() in skills for r in required)


async def open_load(session: AsyncSession, agent_ids: Sequence[int]) -> dict[int, int]:
    """Open conversations assigned to each agent (agents with none are 0)."""
    loads = dict.fromkeys(agent_ids, 0)
    if not agent_ids:
        return loads
    rows = await session.execute(
        select(Conversation.assignee_id, func.count())
        .where(
            Conversation.assignee_id.in_(list(agent_ids)),
            Conversation.status == ConversationStatus.OPEN,
        )
        .group_by(Conversation.assignee_id)
    )
    for agent_id, count in rows:
        loads[agent_id] = int(count)
    return loads


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _team(session: AsyncSession, name: str, *, lock: bool) -> Team | None:
    query = select(Team).where(Team.name == name).execution_options(populate_existing=True)
    if lock and _is_postgres(session):
        query = query.with_for_update(key_share=True)
    return await session.scalar(query)


async def _sticky_owner(session: AsyncSession, owner_id: int) -> Agent | None:
    """The owner agent, locked, if they can take one more conversation now."""
    query = select(Agent).where(Agent.id == owner_id).execution_options(populate_existing=True)
    if _is_postgres(session):
        query = query.with_for_update(key_share=True)
    owner = await session.scalar(query)
    if owner is None or not owner.active or owner.availability != Availability.ONLINE:
        return None
    load = (await open_load(session, [owner.id]))[owner.id]
    return owner if load < owner.capacity else None


async def _anyone_online(session: AsyncSession, team_name: str | None) -> bool:
    """Whether any active agent is online (in the team, if one is named), without locks."""
    query = select(Agent.id).where(
        Agent.active.is_(True), Agent.availability == Availability.ONLINE
    )
    if team_name is not None:
        query = query.join(agent_teams, agent_teams.c.agent_id == Agent.id).join(
            Team, Team.id == agent_teams.c.team_id
        ).where(Team.name == team_name)
    return await session.scalar(query.limit(1)) is not None


def _round_robin(candidates: list[Agent], cursor: int | None) -> Agent:
    """The first candidate after ``cursor`` in id order, wrapping around."""
    if cursor is not None:
        for agent in candidates:
            if agent.id > cursor:
                return agent
    return candidates[0]


async def choose_assignee(
    session: AsyncSession,
    *,
    customer_owner_id: int | None,
    team_name: str | None,
    language: str | None,
    required_skills: Sequence[str] = (),
    strategy: str = "round_robin",
    sticky_owner: bool = True,
) -> Assignment:
    """Choose who gets a conversation, inside the caller's transaction (never commits).

    1. With ``sticky_owner``, the customer's owner agent when active, online and below
       capacity (``sticky-owner``).
    2. Otherwise a member of ``team_name`` (``None``: any active agent, no team) who is
       active, online, below capacity, speaks ``language`` and has ``required_skills``,
       chosen by ``strategy`` (round-robin moves the team's cursor).
    3. Otherwise nobody: the conversation waits in the team's queue
       (``queue:no-agent-available``), or, for a team that does not exist, unassigned
       without a team (``queue:unknown-team``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown assignment strategy {strategy!r}; use {', '.join(STRATEGIES)}")

    if sticky_owner and customer_owner_id is not None:
        owner = await _sticky_owner(session, customer_owner_id)
        if owner is not None:
            team = await _team(session, team_name, lock=False) if team_name else None
            return Assignment(owner.id, team.id if team else None, REASON_STICKY)

    if not await _anyone_online(session, team_name):
        # Nobody to choose from: no lock to take (it would make every worker wait for
        # every other one's commit while the whole floor is offline, as at night).
        team = await _team(session, team_name, lock=False) if team_name else None
        if team_name is not None and team is None:
            return Assignment(None, None, REASON_UNKNOWN_TEAM)
        return Assignment(None, team.id if team else None, REASON_NO_AGENT)

    team: Team | None = None
    members = (
        select(Agent)
        .where(Agent.active.is_(True), Agent.availability == Availability.ONLINE)
        .execution_options(populate_existing=True)
    )
    if team_name is not None:
        team = await _team(session, team_name, lock=True)
        if team is None:
            return Assignment(None, None, REASON_UNKNOWN_TEAM)
        members = members.join(agent_teams, agent_teams.c.agent_id == Agent.id).where(
            agent_teams.c.team_id == team.id
        )
    elif _is_postgres(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": NO_TEAM_LOCK_KEY}
        )

    agents = list(await session.scalars(members.order_by(Agent.id)))
    agents = [a for a in agents if speaks(a, language) and has_skills(a, required_skills)]
    loads = await open_load(session, [a.id for a in agents])
    candidates = [a for a in agents if loads[a.id] < a.capacity]
    team_id = team.id if team else None
    if not candidates:
        return Assignment(None, team_id, REASON_NO_AGENT)

    if strategy == "round_robin" and team is not None:
        chosen = _round_robin(candidates, team.last_assigned_agent_id)
        team.last_assigned_agent_id = chosen.id
        await session.flush()
        return Assignment(chosen.id, team_id, REASON_ROUND_ROBIN)
    chosen = min(candidates, key=lambda a: (loads[a.id], a.id))
    return Assignment(chosen.id, team_id, REASON_LEAST_LOADED)
