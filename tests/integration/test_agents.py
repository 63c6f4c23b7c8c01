"""Agents and teams on SQLite and PostgreSQL: argon2 passwords, logins, teams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher

from crm_core.db import Database
from crm_core.errors import ConflictError, NotFoundError, ValidationError
from crm_core.models import Agent, AgentRole, Availability
from crm_core.services import agents, audit
from crm_core.services.agents import (
    authenticate,
    create_agent,
    create_team,
    get_agent,
    hash_password,
    set_password,
    verify_password,
)

ACTOR = "tester"
PASSWORD = "correct horse battery"


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Cheap argon2 parameters, so the suite stays fast; one test checks the real ones."""
    monkeypatch.setattr(
        agents, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    yield


async def new_agent(db: Database, login: str = "Li.Na", **extra: Any) -> int:
    async with db.transaction() as session:
        extra.setdefault("display_name", "李娜")
        extra.setdefault("password", PASSWORD)
        agent = await create_agent(session, login=login, actor=ACTOR, **extra)
        return agent.id


async def login(db: Database, name: str, password: str) -> Agent | None:
    async with db.transaction() as session:
        return await authenticate(session, name, password)


async def test_password_hash_is_real_argon2id() -> None:
    hashed = hash_password(PASSWORD)
    assert hashed != PASSWORD
    assert PASSWORD not in hashed
    assert hashed.startswith("$argon2id$")
    assert hash_password(PASSWORD) != hashed  # salted
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, PASSWORD + "!")
    assert not verify_password("not a hash", PASSWORD)


async def test_short_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        hash_password("short")
    assert info.value.field == "password"
    assert "short" not in str(info.value)
    assert "8" in str(info.value)


async def test_create_agent(db: Database, fast_hashing: None) -> None:
    async with db.transaction() as session:
        team = await create_team(session, "VIP desk", actor=ACTOR)
        agent = await create_agent(
            session,
            login="  Li.Na ",
            display_name="李娜",
            password=PASSWORD,
            actor=ACTOR,
            role=AgentRole.SUPERVISOR,
            email="li.na@example.com",
            skills=["billing", "vip"],
            languages=["zh-CN", "en"],
            capacity=5,
            availability=Availability.ONLINE,
            teams=[team],
        )
        agent_id = agent.id
    async with db.sessions() as session:
        stored = await get_agent(session, agent_id)
        entries = await audit.history(session, "agent", agent_id)
    assert stored.login == "li.na"
    assert stored.display_name == "李娜"
    assert stored.role == AgentRole.SUPERVISOR
    assert stored.email == "li.na@example.com"
    assert stored.skills == ["billing", "vip"]
    assert stored.languages == ["zh-CN", "en"]
    assert stored.capacity == 5
    assert stored.availability == Availability.ONLINE
    assert stored.active is True
    assert [t.name for t in stored.teams] == ["VIP desk"]
    assert stored.password_hash != PASSWORD
    assert stored.password_hash.startswith("$argon2")
    assert [e.action for e in entries] == ["create"]
    assert entries[0].after == {"login": "li.na", "role": "supervisor", "teams": ["VIP desk"]}
    assert PASSWORD not in repr(entries[0].after)


async def test_agent_defaults(db: Database, fast_hashing: None) -> None:
    agent_id = await new_agent(db, "wang", display_name="  ")
    async with db.sessions() as session:
        agent = await get_agent(session, agent_id)
    assert agent.display_name == "wang"
    assert agent.role == AgentRole.AGENT
    assert agent.availability == Availability.OFFLINE
    assert agent.capacity == 10
    assert agent.skills == []
    assert agent.teams == []


async def test_short_password_creates_nothing(db: Database, fast_hashing: None) -> None:
    with pytest.raises(ValidationError) as info:
        await new_agent(db, password="1234567")
    assert info.value.field == "password"
    assert "1234567" not in str(info.value)
    async with db.sessions() as session:
        assert await authenticate(session, "li.na", "1234567") is None


async def test_bad_login_and_capacity(db: Database, fast_hashing: None) -> None:
    with pytest.raises(ValidationError) as info:
        await new_agent(db, "   ")
    assert info.value.field == "login"
    with pytest.raises(ValidationError) as info:
        await new_agent(db, "x" * 101)
    assert info.value.field == "login"
    with pytest.raises(ValidationError) as info:
        await new_agent(db, "ok", capacity=-1)
    assert info.value.field == "capacity"


async def test_duplicate_login_conflicts(db: Database, fast_hashing: None) -> None:
    first = await new_agent(db, "li.na")
    with pytest.raises(ConflictError) as info:
        await new_agent(db, " LI.NA ", display_name="Another")
    assert info.value.customer_id == first
    assert "li.na" in str(info.value)
    assert "李娜" in str(info.value)


async def test_authenticate(db: Database, fast_hashing: None) -> None:
    agent_id = await new_agent(db, "li.na")
    agent = await login(db, "li.na", PASSWORD)
    assert agent is not None
    assert agent.id == agent_id
    assert agent.last_login_at is not None
    assert (await login(db, "  LI.NA ", PASSWORD)) is not None
    assert await login(db, "li.na", "wrong password") is None
    assert await login(db, "li.na", PASSWORD.upper()) is None
    assert await login(db, "li.na", "") is None
    assert await login(db, "nobody", PASSWORD) is None
    async with db.sessions() as session:
        stored = await get_agent(session, agent_id)
    assert stored.last_login_at is not None
    assert stored.last_login_at.tzinfo is not None


async def test_inactive_agent_cannot_log_in(db: Database, fast_hashing: None) -> None:
    agent_id = await new_agent(db, "li.na")
    async with db.transaction() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        agent.active = False
    assert await login(db, "li.na", PASSWORD) is None


async def test_set_password(db: Database, fast_hashing: None) -> None:
    agent_id = await new_agent(db, "li.na")
    async with db.transaction() as session:
        await set_password(session, agent_id, "a brand new secret", actor="admin")
    assert await login(db, "li.na", PASSWORD) is None
    assert await login(db, "li.na", "a brand new secret") is not None
    async with db.sessions() as session:
        entries = await audit.history(session, "agent", agent_id)
    assert entries[0].action == "password"
    assert entries[0].before is None and entries[0].after is None
    with pytest.raises(ValidationError):
        async with db.transaction() as session:
            await set_password(session, agent_id, "short", actor="admin")
    with pytest.raises(NotFoundError):
        async with db.transaction() as session:
            await set_password(session, 9999, "long enough secret", actor="admin")


async def test_create_team_unique(db: Database) -> None:
    async with db.transaction() as session:
        team = await create_team(session, "  售后服务 ", actor=ACTOR, description="after-sales")
        team_id = team.id
    assert team.name == "售后服务"
    with pytest.raises(ConflictError) as info:
        async with db.transaction() as session:
            await create_team(session, "售后服务", actor=ACTOR)
    assert info.value.customer_id == team_id
    assert "售后服务" in str(info.value)
    with pytest.raises(ValidationError) as err:
        async with db.transaction() as session:
            await create_team(session, "   ", actor=ACTOR)
    assert err.value.field == "name"
    async with db.sessions() as session:
        entries = await audit.history(session, "team", team_id)
    assert [e.action for e in entries] == ["create"]


async def test_get_missing_agent(db: Database) -> None:
    with pytest.raises(NotFoundError):
        async with db.sessions() as session:
            await get_agent(session, 31337)
