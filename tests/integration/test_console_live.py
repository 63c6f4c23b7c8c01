"""Live updates on /console/ws: each agent gets only the events they may see."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select

from contact_center.web.live import LIVE_HUB, REDIS_CHANNEL
from crm_core.db import Database
from crm_core.models import AgentRole, Team, agent_teams
from routing.engine import RoutingEngine
from routing.events import Event, EventBus, RedisEventForwarder
from tests.conftest import REDIS_URL
from tests.integration.console_support import (
    Seeded,
    add_agent,
    add_team,
    login,
    make_engine,
    second_client,
    seed_conversation,
    start_client,
)


@dataclass
class Room:
    """Agent li (team X) and agent wang (team Y), each in a browser, plus the engine."""

    li_client: TestClient
    wang_client: TestClient
    engine: RoutingEngine
    li: int
    wang: int
    mine: Seeded
    theirs: Seeded


async def _room(db: Database, tmp_path: Path, engine: RoutingEngine,
                **settings: Any) -> Room:
    team_x = await add_team(db, "售后服务 After-sales")
    team_y = await add_team(db, "VIP desk")
    li = await add_agent(db, "li", teams=(team_x,))
    wang = await add_agent(db, "wang", teams=(team_y,))
    await add_agent(db, "zhao", role=AgentRole.SUPERVISOR, teams=(team_x,))
    mine = await seed_conversation(db, assignee_id=li, team_id=team_x)
    theirs = await seed_conversation(db, name="于先生", email="yu@example.cn",
                                     assignee_id=wang, team_id=team_y)
    li_client = await start_client(db, tmp_path, engine=engine, **settings)
    wang_client = await second_client(li_client)
    await login(li_client, "li")
    await login(wang_client, "wang")
    return Room(li_client, wang_client, engine, li, wang, mine, theirs)


@pytest.fixture
async def room(db: Database, tmp_path: Path) -> AsyncIterator[Room]:
    built = await _room(db, tmp_path, make_engine(db))
    try:
        yield built
    finally:
        await built.wang_client.close()
        await built.li_client.close()


async def frames(socket: aiohttp.ClientWebSocketResponse, seconds: float = 0.6,
                 ) -> list[dict[str, Any]]:
    """Every event frame that arrives within ``seconds``."""
    received: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await socket.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                received.append(json.loads(message.data))
    except TimeoutError:
        pass
    return received


async def connected(client: TestClient, count: int = 1) -> aiohttp.ClientWebSocketResponse:
    socket = await client.ws_connect("/console/ws")
    hub = client.server.app[LIVE_HUB]
    async with asyncio.timeout(5):
        while len(hub.clients) < count:  # noqa: ASYNC110 - polling the hub is the point
            await asyncio.sleep(0.01)
    return socket


async def test_events_reach_only_agents_who_may_see_them(room: Room) -> None:
    """interaction.logged of li's conversation reaches li, not wang, and the reverse; a
    ticket event is placed through its ticket; a customer event through the customer's
    conversations; an event naming nothing reaches supervisors only."""
    li_ws = await connected(room.li_client)
    wang_ws = await connected(room.wang_client, 2)
    await room.engine.events.publish([
        Event("interaction.logged", {"interaction_id": room.mine.interaction_id,
                                     "conversation_id": room.mine.conversation_id,
                                     "customer_id": room.mine.customer_id,
                                     "channel": "email"}),
        Event("ticket.updated", {"ticket_id": room.theirs.ticket_id, "change": "rules"}),
        Event("customer.created", {"customer_id": room.mine.customer_id, "channel": "email"}),
        Event("notification", {"target": "supervisors", "rule": "vip"}),
    ])
    li_got = await frames(li_ws)
    wang_got = await frames(wang_ws)
    assert [(f["name"], f["data"].get("conversation_id") or f["data"].get("customer_id"))
            for f in li_got] == [("interaction.logged", room.mine.conversation_id),
                                 ("customer.created", room.mine.customer_id)]
    assert [f["name"] for f in wang_got] == ["ticket.updated"]
    await li_ws.close()
    await wang_ws.close()

    supervisor = await second_client(room.li_client)
    await login(supervisor, "zhao")
    zhao_ws = await connected(supervisor)
    await room.engine.events.publish([Event("notification", {"target": "supervisors"})])
    assert [f["name"] for f in await frames(zhao_ws)] == ["notification"]
    await zhao_ws.close()
    await supervisor.session.close()


async def test_a_screen_pop_goes_only_to_its_agent(room: Room) -> None:
    """call.screen_pop carries the caller's card for one agent."""
    li_ws = await connected(room.li_client)
    wang_ws = await connected(room.wang_client, 2)
    await room.engine.events.publish([Event("call.screen_pop", {
        "agent_id": room.wang, "call_id": "CA1", "number": "+8613800138000",
        "customer_id": room.mine.customer_id, "name": "张伟"})])
    assert [f["name"] for f in await frames(wang_ws)] == ["call.screen_pop"]
    assert await frames(li_ws) == []  # li may see the customer, but the call is wang's


async def test_a_mention_reaches_the_mentioned_agent_only(room: Room, db: Database) -> None:
    """note.mentioned goes to the agents it names (who may see the conversation)."""
    li_ws = await connected(room.li_client)
    wang_ws = await connected(room.wang_client, 2)
    await room.engine.events.publish([Event("note.mentioned", {
        "conversation_id": room.mine.conversation_id, "agent_ids": [room.li],
        "author_id": room.wang, "author_name": "王芳"})])
    assert [f["name"] for f in await frames(li_ws)] == ["note.mentioned"]
    assert await frames(wang_ws) == []


async def test_the_socket_needs_a_session_and_our_origin(room: Room) -> None:
    """No cookie, no socket; a page of another site cannot open one with our cookie."""
    anonymous = await second_client(room.li_client)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await anonymous.ws_connect("/console/ws")
    await anonymous.session.close()  # not close(): the server is shared
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await room.li_client.ws_connect("/console/ws",
                                        headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    own = f"http://{room.li_client.host}:{room.li_client.port}"
    socket = await room.li_client.ws_connect("/console/ws", headers={"Origin": own})
    await socket.close()


async def test_shutdown_closes_the_sockets(db: Database, tmp_path: Path) -> None:
    """On app shutdown every console socket is closed (1001, going away)."""
    built = await _room(db, tmp_path, make_engine(db))
    socket = await connected(built.li_client)
    # wang's client shares the server: closing it shuts the server down
    shutdown = asyncio.create_task(built.wang_client.close())
    message = await asyncio.wait_for(socket.receive(), 5)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    await asyncio.wait_for(shutdown, 10)
    assert built.li_client.server.app[LIVE_HUB].clients == set()
    await built.li_client.close()


async def test_redis_events_from_other_nodes_are_forwarded_once(
    db: Database, tmp_path: Path, redis_client: Any,
) -> None:
    """Scale-out: another process's event arrives through cc:events; this node's own
    events, echoed back by Redis, are not sent twice."""
    events = EventBus()
    events.forwarders.append(RedisEventForwarder(redis_client, REDIS_CHANNEL))
    built = await _room(db, tmp_path, make_engine(db, events), redis_url=REDIS_URL)
    try:
        hub = built.li_client.server.app[LIVE_HUB]
        assert hub.subscribed.is_set()
        socket = await connected(built.li_client)
        await built.engine.events.publish([Event("interaction.logged", {
            "conversation_id": built.mine.conversation_id, "marker": "local"})])
        other_node = Event("ticket.updated", {"ticket_id": built.mine.ticket_id,
                                              "marker": "remote"})
        await redis_client.publish(REDIS_CHANNEL, other_node.to_json())
        await redis_client.publish(REDIS_CHANNEL, Event("ticket.updated", {
            "ticket_id": built.theirs.ticket_id, "marker": "invisible"}).to_json())
        got = await frames(socket, 1.5)
        assert sorted(f["data"]["marker"] for f in got) == ["local", "remote"]
        await socket.close()
    finally:
        await built.wang_client.close()
        await built.li_client.close()


async def test_a_team_change_reaches_an_open_socket(room: Room, db: Database) -> None:
    """wang leaves the VIP desk: after the hub's periodic session check, the desk's queue
    events stop reaching his open socket (no reconnect needed)."""
    async with db.sessions() as session:
        desk = await session.scalar(select(Team.id).where(Team.name == "VIP desk"))
    queued = await seed_conversation(db, name="钱女士", email="qian@example.cn",
                                     assignee_id=None, team_id=desk)
    event = Event("interaction.logged", {"conversation_id": queued.conversation_id,
                                         "customer_id": queued.customer_id})
    wang_ws = await connected(room.wang_client)
    hub = room.wang_client.server.app[LIVE_HUB]
    await room.engine.events.publish([event])
    assert [f["name"] for f in await frames(wang_ws)] == ["interaction.logged"]
    async with db.transaction() as session:
        await session.execute(delete(agent_teams).where(agent_teams.c.agent_id == room.wang))
    await hub.check_sessions()
    await room.engine.events.publish([event])
    assert await frames(wang_ws) == []
    await wang_ws.close()
