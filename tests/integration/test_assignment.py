"""Agent assignment on SQLite and PostgreSQL: sticky owner, filters, strategies, queue, locks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select

from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    Channel,
    Conversation,
    ConversationStatus,
    Customer,
    Team,
)
from routing.assignment import Assignment, choose_assignee

ONLINE = Availability.ONLINE


async def add_team(db: Database, name: str = "售后服务 Support") -> int:
    async with db.transaction() as session:
        team = Team(name=name)
        session.add(team)
        await session.flush()
        return team.id


async def add_agent(
    db: Database,
    login: str,
    *,
    team_ids: Sequence[int] = (),
    availability: Availability = ONLINE,
    capacity: int = 5,
    skills: Sequence[str] = (),
    languages: Sequence[str] = (),
    active: bool = True,
) -> int:
    """An agent row written directly (argon2 hashing would only slow the tests down)."""
    async with db.transaction() as session:
        teams = [await session.get_one(Team, team_id) for team_id in team_ids]
        agent = Agent(
            login=login,
            display_name=login,
            password_hash="!",
            availability=availability,
            capacity=capacity,
            skills=list(skills),
            languages=list(languages),
            active=active,
            teams=teams,
        )
        session.add(agent)
        await session.flush()
        return agent.id


async def add_conversations(
    db: Database,
    agent_id: int,
    count: int,
    status: ConversationStatus = ConversationStatus.OPEN,
) -> None:
    async with db.transaction() as session:
        customer = Customer(display_name="张三")
        session.add(customer)
        await session.flush()
        for _ in range(count):
            session.add(
                Conversation(
                    customer_id=customer.id,
                    channel=Channel.WEBCHAT,
                    assignee_id=agent_id,
                    status=status,
                )
            )


async def choose(db: Database, **kwargs: Any) -> Assignment:
    """Choose inside one transaction, as the routing engine does."""
    kwargs.setdefault("customer_owner_id", None)
    kwargs.setdefault("team_name", "售后服务 Support")
    kwargs.setdefault("language", None)
    async with db.transaction() as session:
        return await choose_assignee(session, **kwargs)


async def cursor(db: Database, team_id: int) -> int | None:
    async with db.sessions() as session:
        return await session.scalar(
            select(Team.last_assigned_agent_id).where(Team.id == team_id)
        )


# --- sticky owner -------------------------------------------------------------------------


async def test_sticky_owner_gets_it(db: Database) -> None:
    team = await add_team(db)
    owner = await add_agent(db, "owner")  # not even in the team
    await add_agent(db, "member", team_ids=[team])
    result = await choose(db, customer_owner_id=owner)
    assert result == Assignment(owner, team, "sticky-owner")
    assert await cursor(db, team) is None  # the rotation is not disturbed
    no_team = await choose(db, customer_owner_id=owner, team_name=None)
    assert no_team == Assignment(owner, None, "sticky-owner")


@pytest.mark.parametrize(
    "owner_state",
    [
        {"availability": Availability.OFFLINE},
        {"availability": Availability.AWAY},
        {"active": False},
        {"capacity": 2, "busy": 2},
        {"capacity": 0},
    ],
    ids=["offline", "away", "inactive", "at-capacity", "no-capacity"],
)
async def test_owner_unavailable_goes_to_team(db: Database, owner_state: dict[str, Any]) -> None:
    team = await add_team(db)
    state = dict(owner_state)  # shared by the SQLite and PostgreSQL runs: do not mutate
    busy = state.pop("busy", 0)
    owner = await add_agent(db, "owner", team_ids=[team], **state)
    await add_conversations(db, owner, busy)
    member = await add_agent(db, "member", team_ids=[team])
    result = await choose(db, customer_owner_id=owner)
    assert result == Assignment(member, team, "round-robin")


async def test_sticky_owner_can_be_switched_off(db: Database) -> None:
    team = await add_team(db)
    owner = await add_agent(db, "owner")
    member = await add_agent(db, "member", team_ids=[team])
    result = await choose(db, customer_owner_id=owner, sticky_owner=False)
    assert result == Assignment(member, team, "round-robin")


async def test_owner_closed_conversations_do_not_count(db: Database) -> None:
    owner = await add_agent(db, "owner", capacity=1)
    await add_conversations(db, owner, 3, ConversationStatus.CLOSED)
    result = await choose(db, customer_owner_id=owner, team_name=None)
    assert result.reason == "sticky-owner"


# --- filters ------------------------------------------------------------------------------


async def test_capacity_is_respected(db: Database) -> None:
    team = await add_team(db)
    full = await add_agent(db, "full", team_ids=[team], capacity=2)
    await add_conversations(db, full, 2)
    free = await add_agent(db, "free", team_ids=[team], capacity=2)
    await add_conversations(db, free, 1)
    await add_conversations(db, free, 5, ConversationStatus.CLOSED)
    assert (await choose(db)).agent_id == free
    assert (await choose(db, strategy="least_loaded")).agent_id == free


async def test_only_online_active_team_members(db: Database) -> None:
    team = await add_team(db)
    other_team = await add_team(db, "VIP desk")
    await add_agent(db, "away", team_ids=[team], availability=Availability.AWAY)
    await add_agent(db, "gone", team_ids=[team], active=False)
    await add_agent(db, "elsewhere", team_ids=[other_team])
    result = await choose(db)
    assert result == Assignment(None, team, "queue:no-agent-available")


async def test_language_filter(db: Database) -> None:
    team = await add_team(db)
    english = await add_agent(db, "english", team_ids=[team], languages=["en"])
    chinese = await add_agent(db, "chinese", team_ids=[team], languages=["zh", "en"])
    anyone = await add_agent(db, "anyone", team_ids=[team])  # no languages: any
    chosen = {(await choose(db, language="zh-CN", strategy="round_robin")).agent_id
              for _ in range(4)}
    assert chosen == {chinese, anyone}
    assert english not in chosen
    assert (await choose(db, language="en-US", strategy="least_loaded")).agent_id == english


async def test_skills_filter(db: Database) -> None:
    team = await add_team(db)
    await add_agent(db, "billing", team_ids=[team], skills=["billing"])
    tech = await add_agent(db, "tech", team_ids=[team], skills=["Technical", "billing"])
    result = await choose(db, required_skills=["technical", "billing"])
    assert result == Assignment(tech, team, "round-robin")
    assert (await choose(db, required_skills=["legal"])).reason == "queue:no-agent-available"


# --- strategies ---------------------------------------------------------------------------


async def test_round_robin_rotates_and_persists_the_cursor(db: Database) -> None:
    team = await add_team(db)
    a = await add_agent(db, "a", team_ids=[team])
    b = await add_agent(db, "b", team_ids=[team])
    c = await add_agent(db, "c", team_ids=[team])
    picks = [(await choose(db)).agent_id for _ in range(4)]
    assert picks == [a, b, c, a]
    assert await cursor(db, team) == a
    # an agent going offline is skipped; the rotation continues after the cursor
    async with db.transaction() as session:
        (await session.get_one(Agent, b)).availability = Availability.OFFLINE
    assert [(await choose(db)).agent_id for _ in range(3)] == [c, a, c]
    assert await cursor(db, team) == c


async def test_round_robin_cursor_rolls_back_with_the_transaction(db: Database) -> None:
    team = await add_team(db)
    a = await add_agent(db, "a", team_ids=[team])
    await add_agent(db, "b", team_ids=[team])
    async with db.sessions() as session:
        result = await choose_assignee(
            session, customer_owner_id=None, team_name="售后服务 Support", language=None
        )
        assert result.agent_id == a
        await session.rollback()  # e.g. a later pipeline step failed
    assert await cursor(db, team) is None
    assert (await choose(db)).agent_id == a


async def test_least_loaded_picks_fewest_open(db: Database) -> None:
    team = await add_team(db)
    a = await add_agent(db, "a", team_ids=[team])
    b = await add_agent(db, "b", team_ids=[team])
    c = await add_agent(db, "c", team_ids=[team])
    await add_conversations(db, a, 2)
    await add_conversations(db, b, 1)
    await add_conversations(db, c, 1)
    await add_conversations(db, a, 4, ConversationStatus.CLOSED)
    result = await choose(db, strategy="least_loaded")
    assert result == Assignment(b, team, "least-loaded")  # b and c tie: lowest id
    await add_conversations(db, b, 1)
    assert (await choose(db, strategy="least_loaded")).agent_id == c
    assert await cursor(db, team) is None


async def test_without_team_any_agent_least_loaded(db: Database) -> None:
    team = await add_team(db)
    busy = await add_agent(db, "busy", team_ids=[team])
    idle = await add_agent(db, "idle")
    await add_conversations(db, busy, 1)
    result = await choose(db, team_name=None)
    assert result == Assignment(idle, None, "least-loaded")


# --- nobody available ---------------------------------------------------------------------


async def test_nobody_available_goes_to_team_queue(db: Database) -> None:
    team = await add_team(db)
    only = await add_agent(db, "only", team_ids=[team], capacity=1)
    await add_conversations(db, only, 1)
    assert await choose(db) == Assignment(None, team, "queue:no-agent-available")
    assert await choose(db, strategy="least_loaded") == Assignment(
        None, team, "queue:no-agent-available"
    )
    assert await choose(db, team_name=None) == Assignment(None, None, "queue:no-agent-available")


async def test_unknown_team(db: Database) -> None:
    await add_agent(db, "someone")
    assert await choose(db, team_name="No such team") == Assignment(
        None, None, "queue:unknown-team"
    )


async def test_unknown_strategy(db: Database) -> None:
    with pytest.raises(ValueError, match="random"):
        await choose(db, strategy="random")


# --- concurrent workers (PostgreSQL) ------------------------------------------------------


async def test_concurrent_workers_take_turns(postgres_db: Database) -> None:
    """Row locks are a PostgreSQL matter: SQLite has one writer at a time."""
    db = postgres_db
    team = await add_team(db)
    a = await add_agent(db, "a", team_ids=[team], capacity=1)
    b = await add_agent(db, "b", team_ids=[team], capacity=1)
    customer_id: int
    async with db.transaction() as session:
        customer = Customer(display_name="李四")
        session.add(customer)
        await session.flush()
        customer_id = customer.id

    async def worker(started: asyncio.Event | None, release: asyncio.Event | None) -> int | None:
        async with db.transaction() as session:
            result = await choose_assignee(
                session, customer_owner_id=None, team_name="售后服务 Support", language=None
            )
            session.add(
                Conversation(
                    customer_id=customer_id, channel=Channel.WEBCHAT, assignee_id=result.agent_id,
                    team_id=result.team_id,
                )
            )
            await session.flush()
            if started is not None and release is not None:
                started.set()
                await release.wait()  # hold the team lock until told to commit
            return result.agent_id

    started, release = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(worker(started, release))
    await started.wait()
    second = asyncio.create_task(worker(None, None))
    await asyncio.sleep(0.3)
    assert not second.done(), "the second worker must wait for the team lock"
    release.set()
    assert await first == a
    assert await second == b  # saw the first's cursor and load after it committed
    # both are now at capacity: a third worker queues instead of overloading anyone
    assert await worker(None, None) is None


async def test_concurrent_sticky_assignments_respect_capacity(postgres_db: Database) -> None:
    """Row locks are a PostgreSQL matter: SQLite has one writer at a time."""
    db = postgres_db
    team = await add_team(db)
    owner = await add_agent(db, "owner", capacity=1)
    member = await add_agent(db, "member", team_ids=[team])
    async with db.transaction() as session:
        customer = Customer(display_name="王五", owner_agent_id=owner)
        session.add(customer)
        await session.flush()
        customer_id = customer.id

    async def worker(started: asyncio.Event | None, release: asyncio.Event | None) -> Assignment:
        async with db.transaction() as session:
            result = await choose_assignee(
                session, customer_owner_id=owner, team_name="售后服务 Support", language=None
            )
            session.add(
                Conversation(
                    customer_id=customer_id, channel=Channel.TELEGRAM,
                    assignee_id=result.agent_id, team_id=result.team_id,
                )
            )
            await session.flush()
            if started is not None and release is not None:
                started.set()
                await release.wait()  # hold the owner's row lock until told to commit
            return result

    started, release = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(worker(started, release))
    await started.wait()
    second = asyncio.create_task(worker(None, None))
    await asyncio.sleep(0.3)
    assert not second.done(), "the second worker must wait for the owner's row lock"
    release.set()
    assert await first == Assignment(owner, team, "sticky-owner")
    assert await second == Assignment(member, team, "round-robin")  # owner is full now
