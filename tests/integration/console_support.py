"""Helpers for the agent console tests: the app, agents, logged-in clients, seeded data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import (
    AgentRole,
    Channel,
    Conversation,
    Direction,
    Interaction,
    InteractionKind,
    Team,
    Ticket,
    TicketCategory,
    TicketPriority,
    TicketStatus,
    agent_teams,
    ticket_number,
    utcnow,
)
from crm_core.services.agents import create_agent
from crm_core.services.customers import create_customer
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.events import EventBus
from routing.rules import RuleSet

PASSWORD = "correct horse battery"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def make_engine(db: Database, events: EventBus | None = None) -> RoutingEngine:
    """A routing engine on the database bus with the default rules."""
    return RoutingEngine(db, DatabaseBus(db), RoutingConfig(region="CN", rules=RuleSet.default()),
                         events or EventBus())


async def start_client(db: Database, tmp_path: Path, engine: RoutingEngine | None = None,
                       **settings: Any) -> TestClient:
    """The app with the console on a test server (one client = one browser)."""
    app = create_app(Settings(data_dir=tmp_path, **settings), db,
                     engine=engine or make_engine(db))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def second_client(first: TestClient) -> TestClient:
    """Another browser on the same server (its own cookies). Close it with
    ``client.session.close()``: ``client.close()`` stops the shared server."""
    client = TestClient(first.server)
    await client.start_server()
    return client


async def add_team(db: Database, name: str) -> int:
    """A team."""
    async with db.transaction() as session:
        team = Team(name=name)
        session.add(team)
        await session.flush()
        return team.id


async def add_agent(db: Database, login: str, *, role: AgentRole = AgentRole.AGENT,
                    teams: tuple[int, ...] = (), name: str | None = None,
                    language: str = "en") -> int:
    """An agent (password ``PASSWORD``) in ``teams``, with an English console."""
    async with db.transaction() as session:
        agent = await create_agent(session, login=login, display_name=name or login,
                                   password=PASSWORD, actor="test", role=role)
        agent.ui_language = language
        for team_id in teams:
            await session.execute(agent_teams.insert().values(agent_id=agent.id,
                                                              team_id=team_id))
        return agent.id


async def login(client: TestClient, login_name: str) -> str:
    """Log in; returns the session's CSRF token (from the page's meta tag)."""
    response = await client.post("/console/login", data={"login": login_name,
                                                        "password": PASSWORD},
                                 allow_redirects=False)
    assert response.status == 302, await response.text()
    page = await client.get("/console/search")
    match = CSRF_META.search(await page.text())
    assert match, "no CSRF token on the page"
    return match.group(1)


@dataclass
class Seeded:
    """One customer with a conversation, its ticket and its first message."""

    customer_id: int
    conversation_id: int
    ticket_id: int
    ticket_number: str
    interaction_id: int


async def seed_conversation(
    db: Database,
    *,
    name: str = "张伟",
    email: str | None = "zhang.wei@example.cn",
    channel: Channel = Channel.EMAIL,
    subject: str = "发票抬头错了",
    text: str = "你好，我的发票抬头写错了，请帮忙重开。",
    assignee_id: int | None = None,
    team_id: int | None = None,
    status: TicketStatus = TicketStatus.OPEN,
    priority: TicketPriority = TicketPriority.NORMAL,
    category: TicketCategory = TicketCategory.INQUIRY,
    tags: list[str] | None = None,
    first_response_due_at: datetime | None = None,
    resolution_due_at: datetime | None = None,
    customer_id: int | None = None,
    identities: list[dict[str, str]] | None = None,
    thread_key: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    html: str | None = None,
    language: str = "zh-CN",
) -> Seeded:
    """A customer (or ``customer_id``), conversation, ticket and inbound message."""
    now = utcnow()
    async with db.transaction() as session:
        if customer_id is None:
            data: dict[str, Any] = {"display_name": name, "language": language}
            if email:
                data["emails"] = [email]
            if identities:
                data["identities"] = identities
            customer = await create_customer(session, data, actor="test", region="CN")
            customer_id = customer.id
        conversation = Conversation(customer_id=customer_id, channel=channel, subject=subject,
                                    assignee_id=assignee_id, team_id=team_id,
                                    thread_key=thread_key, last_message_at=now)
        session.add(conversation)
        await session.flush()
        interaction = Interaction(
            conversation_id=conversation.id, customer_id=customer_id, channel=channel,
            direction=Direction.INBOUND,
            kind=InteractionKind.CALL if channel == Channel.PHONE else InteractionKind.MESSAGE,
            subject=subject if channel == Channel.EMAIL else None, text=text, html=html,
            attachments=attachments or [],
            meta={"channel": {"from": email} if email and channel == Channel.EMAIL else {}},
            occurred_at=now)
        session.add(interaction)
        ticket = Ticket(subject=subject, customer_id=customer_id,
                        conversation_id=conversation.id, assignee_id=assignee_id,
                        team_id=team_id, status=status, priority=priority, category=category,
                        tags=tags or [], first_response_due_at=first_response_due_at or (
                            now + timedelta(hours=4)),
                        resolution_due_at=resolution_due_at or now + timedelta(days=2))
        session.add(ticket)
        await session.flush()
        ticket.number = ticket_number(ticket.id)
        return Seeded(customer_id, conversation.id, ticket.id, ticket.number, interaction.id)


def row_ids(html: str) -> list[int]:
    """The conversation ids of the inbox rows in a page, in order."""
    return [int(x) for x in re.findall(r'<tr data-row data-id="(\d+)"', html)]


def view_count(html: str, view: str) -> int:
    """The count shown on a view's tab."""
    match = re.search(rf'data-testid="view-{view}">[^<]*<span class="count">(\d+)</span>', html)
    assert match, f"no tab for {view}"
    return int(match.group(1))
