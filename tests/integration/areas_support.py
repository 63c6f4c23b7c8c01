"""Shared set-up of the customers/admin area tests and the role matrix: the app, agents of
every role with open sessions, a seeded world, and a client that acts as one of them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import (
    AgentRole,
    CannedResponse,
    Channel,
    Conversation,
    CustomerCategory,
    CustomerTier,
    Direction,
    Interaction,
    Segment,
)
from crm_core.services.agents import create_agent, create_team
from crm_core.services.customers import create_customer
from crm_core.services.sessions import create_session
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.rules import RuleSet

PASSWORD = "correct horse battery"
ROLES = ("anonymous", "agent_a", "agent_b", "supervisor", "admin")
"""The people of the role tests: nobody, an agent of team A, an agent of team B, the
supervisor of team A, an admin."""


@dataclass
class Person:
    """A logged-in agent: the session cookie value and its CSRF token."""

    agent_id: int
    login: str
    cookie: str
    csrf: str


@dataclass
class World:
    """What the tests work with: people, teams and the ids of seeded records."""

    people: dict[str, Person] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)


def build_app(db: Database, tmp_path: Path, settings: Settings | None = None) -> Any:
    """The whole application on ``db``, with the shipped rules."""
    engine = RoutingEngine(db, DatabaseBus(db), RoutingConfig(region="CN",
                                                              rules=RuleSet.default()))
    return create_app(settings or Settings(data_dir=tmp_path), db, engine=engine)


@asynccontextmanager
async def app_client(db: Database, tmp_path: Path,
                     settings: Settings | None = None) -> AsyncIterator[TestClient]:
    """A test client without a cookie jar (each request names its session)."""
    client = TestClient(TestServer(build_app(db, tmp_path, settings)),
                        cookie_jar=DummyCookieJar())
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def seed_world(db: Database) -> World:
    """Teams A and B; an admin, a supervisor (A), agent A and agent B with sessions;
    classes; customers owned by A, in B's queue, in A's queue; conversations and
    interactions (Chinese and English); a segment; a canned response."""
    world = World()
    async with db.transaction() as session:
        team_a = await create_team(session, "Team A 一线", actor="test")
        team_b = await create_team(session, "Team B 售后", actor="test")
        session.add_all([
            CustomerCategory(code="retail", name="Retail", name_zh="零售"),
            CustomerCategory(code="wholesale", name="Wholesale", name_zh="批发"),
            CustomerTier(code="vip", name="VIP", name_zh="贵宾", rank=3),
            CustomerTier(code="standard", name="Standard", name_zh="普通", rank=1),
        ])
        specs = {
            "admin": (AgentRole.ADMIN, []),
            "supervisor": (AgentRole.SUPERVISOR, [team_a]),
            "agent_a": (AgentRole.AGENT, [team_a]),
            "agent_b": (AgentRole.AGENT, [team_b]),
        }
        agents = {}
        for name, (role, teams) in specs.items():
            agents[name] = await create_agent(
                session, login=name.replace("_", "-"), display_name=f"{name} 坐席",
                password=PASSWORD, actor="test", role=role, teams=teams,
                email=f"{name.replace('_', '-')}@shop.example")
        world.ids.update(team_a=team_a.id, team_b=team_b.id,
                         **{f"{k}_id": v.id for k, v in agents.items()})
        await session.flush()
        for name, agent in agents.items():
            agent.ui_language = "en"  # pages in English; a test switches one to Chinese
            token, row = await create_session(session, agent)
            world.people[name] = Person(agent.id, agent.login, token, row.csrf_token)

        async def customer(key: str, **data: Any) -> int:
            created = await create_customer(session, data, actor="test", region="CN")
            world.ids[key] = created.id
            return created.id

        own_a = await customer("customer_a", display_name="张伟", phones=["138 0013 8000"],
                               emails=["zhang.wei@example.cn"], tier_code="vip",
                               category_code="retail", tags=["回头客"],
                               owner_agent_id=agents["agent_a"].id)
        queue_b = await customer("customer_b", display_name="Mary Smith",
                                 emails=["mary@example.com"], tier_code="standard",
                                 category_code="wholesale")
        queue_a = await customer("customer_q", display_name="李娜", phones=["13912345678"],
                                 category_code="retail")
        await customer("customer_other", display_name="王芳", emails=["wang@example.cn"])
        for role in ROLES:
            await customer(f"throwaway_{role}", display_name=f"临时 {role}")
            await customer(f"merge_keep_{role}", display_name=f"合并 {role}")
            await customer(f"merge_gone_{role}", display_name=f"合并 {role} 重复")

        def conversation(customer_id: int, team_id: int | None, assignee: int | None,
                         subject: str) -> Conversation:
            row = Conversation(customer_id=customer_id, channel=Channel.EMAIL, subject=subject,
                               team_id=team_id, assignee_id=assignee)
            session.add(row)
            return row

        conv_a = conversation(own_a, team_a.id, agents["agent_a"].id, "发票问题")
        conv_b = conversation(queue_b, team_b.id, None, "Refund please")
        conv_q = conversation(queue_a, team_a.id, None, "物流查询")
        await session.flush()
        world.ids.update(conversation_a=conv_a.id, conversation_b=conv_b.id,
                         conversation_q=conv_q.id)
        moment = datetime(2026, 5, 6, 3, 0, tzinfo=UTC)
        rows = [
            Interaction(conversation_id=conv_a.id, customer_id=own_a, channel=Channel.EMAIL,
                        direction=Direction.INBOUND, subject="发票问题",
                        text="你好，我需要开具增值税发票，谢谢", occurred_at=moment),
            Interaction(conversation_id=conv_a.id, customer_id=own_a, channel=Channel.EMAIL,
                        direction=Direction.OUTBOUND, agent_id=agents["agent_a"].id,
                        text="您好，发票已经寄出", occurred_at=moment.replace(hour=4)),
            Interaction(conversation_id=conv_b.id, customer_id=queue_b,
                        channel=Channel.WEBCHAT, direction=Direction.INBOUND,
                        text="I want a refund for my broken kettle",
                        occurred_at=moment.replace(day=7)),
            Interaction(conversation_id=conv_q.id, customer_id=queue_a,
                        channel=Channel.TELEGRAM, direction=Direction.INBOUND,
                        text="我的快递到哪里了？要退款", occurred_at=moment.replace(day=8)),
        ]
        session.add_all(rows)
        await session.flush()
        world.ids["interaction_a"] = rows[0].id
        segment = Segment(name="VIP 客户", filter={"tier": "vip"})
        session.add(segment)
        canned_rows = {role: CannedResponse(shortcut=f"bye-{role}", language="zh-CN",
                                            title="再见", body="再见，{{customer.name}}！")
                       for role in ROLES}
        session.add_all(canned_rows.values())
        keep = CannedResponse(shortcut="hello", language="en", title="Hello",
                              body="Hello {{customer.name}}, this is {{agent.name}}.")
        session.add(keep)
        segments = {role: Segment(name=f"Segment {role}", filter={}) for role in ROLES}
        session.add_all(segments.values())
        session.add_all([CustomerCategory(code=f"cat-{role.replace('_', '-')}", name=role)
                         for role in ROLES])
        session.add_all([CustomerTier(code=f"tier-{role.replace('_', '-')}", name=role)
                         for role in ROLES])
        await session.flush()
        world.ids.update(segment=segment.id, canned=keep.id)
        for role in ROLES:
            world.ids[f"canned_{role}"] = canned_rows[role].id
            world.ids[f"segment_{role}"] = segments[role].id
    return world


class Actor:
    """Requests on behalf of one person (or nobody), with their session and CSRF token."""

    def __init__(self, client: TestClient, person: Person | None) -> None:
        self.client = client
        self.person = person

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept-Language": "en"}
        if self.person is not None:
            headers["Cookie"] = f"cc_session={self.person.cookie}"
        headers.update(extra or {})
        return headers

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        """GET without following redirects."""
        return await self.client.get(path, headers=self._headers(kwargs.pop("headers", None)),
                                     allow_redirects=False, **kwargs)

    async def post(self, path: str, data: Any = None, *, csrf: bool = True,
                   **kwargs: Any) -> ClientResponse:
        """POST a form (with the CSRF token unless ``csrf=False``), no redirects followed."""
        if csrf and self.person is not None:
            if data is None:
                data = {}
            if isinstance(data, dict):
                data = {"_csrf": self.person.csrf, **data}
            else:  # FormData (uploads)
                data.add_field("_csrf", self.person.csrf)
        if isinstance(data, dict):  # a list value is a checkbox group: one field per item
            data = [(key, item) for key, value in data.items()
                    for item in (value if isinstance(value, list) else [value])]
        return await self.client.post(path, data=data,
                                      headers=self._headers(kwargs.pop("headers", None)),
                                      allow_redirects=False, **kwargs)


def actor(client: TestClient, world: World, role: str) -> Actor:
    """Act as ``role`` (one of ``ROLES``)."""
    return Actor(client, world.people.get(role))


def ids_in(html: str, attribute: str = "data-customer-id") -> list[int]:
    """The record ids a page lists (``data-customer-id="12"``)."""
    return [int(v) for v in re.findall(rf'{attribute}="(\d+)"', html)]

