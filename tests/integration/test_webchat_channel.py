"""The web chat channel through our aiohttp app: handshake, frames, bus, routing, replies.

A real WebSocket client talks to the app on a test server; messages go through the
database bus and the routing engine, replies through the outbox and the dispatcher,
exactly as in production.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from channels.webchat import agent_typing
from contact_center.app import create_app
from contact_center.settings import Settings, WebchatSettings
from contact_center.webchat import setup_webchat, webchat_adapter, webchat_hub
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    IdentityKind,
    Interaction,
    OutboxMessage,
    QueueEntry,
    Ticket,
)
from routing.adapters import ChannelRegistry
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import InboundMessage, OutboundMessage, SenderHandles
from routing.events import EventBus
from routing.outbox import OutboxDispatcher, enqueue_reply
from routing.rules import RuleSet

NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
ORIGIN = "https://shop.example.cn"
INBOUND = Interaction.direction == Direction.INBOUND


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """The routing engine on the database bus."""
    config = RoutingConfig(region="CN", rules=RuleSet.default())
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT), config, EventBus())


@pytest.fixture
def sqlite_engine(sqlite_db: Database) -> RoutingEngine:
    """The routing engine on the database bus of the SQLite database."""
    config = RoutingConfig(region="CN", rules=RuleSet.default())
    return RoutingEngine(sqlite_db, DatabaseBus(sqlite_db, NO_WAIT), config, EventBus())


def chat_settings(**webchat: Any) -> Settings:
    values: dict[str, Any] = {"allowed_origins": [ORIGIN], "presence_cache_seconds": 0}
    return Settings(webchat=WebchatSettings(**{**values, **webchat}))


async def start(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(db: Database, engine: RoutingEngine) -> AsyncIterator[TestClient]:
    """Our app (``create_app``) with the web chat, on a test server."""
    client = await start(create_app(chat_settings(), db, engine=engine))
    yield client
    await client.close()


@pytest.fixture
async def sqlite_client(
    sqlite_db: Database, sqlite_engine: RoutingEngine
) -> AsyncIterator[TestClient]:
    """The same on SQLite only, with an agent online, for tests where the database does
    not matter."""
    await add_agent(sqlite_db)
    client = await start(create_app(chat_settings(), sqlite_db, engine=sqlite_engine))
    yield client
    await client.close()


async def add_agent(
    db: Database, name: str = "王芳", availability: Availability = Availability.ONLINE
) -> int:
    async with db.transaction() as session:
        agent = Agent(login=f"a{uuid.uuid4().hex[:8]}", display_name=name, password_hash="!",
                      availability=availability)
        session.add(agent)
        await session.flush()
        return agent.id


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def route_all(engine: RoutingEngine) -> None:
    while await engine.run_once("w"):
        pass


class Chat:
    """One widget tab: a socket and the frames it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, visitor_id: str) -> None:
        self.ws = ws
        self.visitor_id = visitor_id
        self.frames: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame, ensure_ascii=False))

    async def message(self, text: str, cmid: str | None = None) -> str:
        cmid = cmid or new_id()
        await self.send(type="message", client_message_id=cmid, text=text)
        return cmid

    async def next(self, seconds: float = 5.0) -> dict[str, Any]:
        """The next frame, whatever its type."""
        received = await self.ws.receive(timeout=seconds)
        if received.type != WSMsgType.TEXT:
            raise AssertionError(f"socket ended: {received.type} {received.data!r}")
        frame: dict[str, Any] = json.loads(received.data)
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, seconds: float = 5.0) -> dict[str, Any]:
        """The next frame of this type (others are kept in ``frames``)."""
        async with asyncio.timeout(seconds):
            while True:
                frame = await self.next(seconds)
                if frame["type"] == kind:
                    return frame

    async def nothing(self, seconds: float = 0.3) -> None:
        """No frame arrives for a while."""
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                received = await self.ws.receive()
                raise AssertionError(f"unexpected {received.type} {received.data!r}")


async def open_chat(
    client: TestClient, visitor_id: str | None = None, **hello: Any
) -> tuple[Chat, dict[str, Any]]:
    ws = await client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
    chat = Chat(ws, visitor_id or new_id())
    await chat.send(type="hello", visitor_id=chat.visitor_id, **hello)
    welcome = await chat.expect("welcome")
    return chat, welcome


async def reply_as_agent(
    db: Database, visitor_id: str, text: str, agent_id: int, *, email: str | None = None
) -> OutboxMessage:
    """What the console does when an agent answers the visitor's conversation."""
    async with db.transaction() as session:
        conversation = (await session.scalars(
            select(Conversation).where(Conversation.thread_key == visitor_id)
            .order_by(Conversation.id.desc()).limit(1))).one()
        customer = await session.get(Customer, conversation.customer_id)
        assert customer is not None
        return await enqueue_reply(
            session, conversation=conversation, customer=customer, channel=Channel.WEBCHAT,
            to=SenderHandles(visitor_id=visitor_id, email=email), text=text, agent_id=agent_id,
        )


def dispatcher(db: Database, app: web.Application) -> OutboxDispatcher:
    registry = ChannelRegistry()
    registry.register(webchat_adapter(app))
    return OutboxDispatcher(db, registry, NO_WAIT)


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


# --- the widget and the handshake ----------------------------------------------------


async def test_widget_script_is_served_with_its_settings(sqlite_db: Database,
                                                         sqlite_engine: RoutingEngine) -> None:
    settings = chat_settings(title_zh="小店客服", max_message_chars=500)
    client = await start(create_app(settings, sqlite_db, engine=sqlite_engine))
    try:
        response = await client.get("/webchat/widget.js")
        assert response.status == 200
        assert response.content_type == "application/javascript"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        body = await response.text()
    finally:
        await client.close()
    assert "__CC_WEBCHAT_CONFIG__" not in body
    assert '"maxChars": 500' in body
    assert "\\u5c0f\\u5e97\\u5ba2\\u670d" in body  # 小店客服, escaped inside the script
    assert "innerHTML" not in body and "eval(" not in body
    # Nothing is loaded from elsewhere: the only URL in the code is the SVG namespace.
    code = body.split("*/", 1)[1]
    assert re.findall(r"https?://[^\s\"']+", code) == ["http://www.w3.org/2000/svg"]


async def test_disabled_webchat_has_no_routes(sqlite_db: Database,
                                              sqlite_engine: RoutingEngine) -> None:
    client = await start(create_app(chat_settings(enabled=False), sqlite_db,
                                    engine=sqlite_engine))
    try:
        assert (await client.get("/webchat/widget.js")).status == 404
    finally:
        await client.close()


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://shop.example.cn", None])
async def test_handshake_from_another_origin_is_refused_with_json(
    sqlite_client: TestClient, origin: str | None
) -> None:
    headers = dict(UPGRADE)
    if origin is not None:
        headers["Origin"] = origin
    with capture_logs() as logs:
        response = await sqlite_client.get("/webchat/ws", headers=headers)
    assert response.status == 403
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == "origin not allowed"
    assert any(entry["event"] == "webchat.origin_refused" for entry in logs)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await sqlite_client.ws_connect("/webchat/ws", headers={"Origin": "https://evil.example"})
    assert caught.value.status == 403
    # The server is fine: the allowed origin still connects.
    chat, welcome = await open_chat(sqlite_client)
    assert welcome["visitor_id"] == chat.visitor_id
    await chat.ws.close()


async def test_plain_get_on_the_socket_is_400_json(sqlite_client: TestClient) -> None:
    response = await sqlite_client.get("/webchat/ws", headers={"Origin": ORIGIN})
    assert response.status == 400
    assert (await response.json())["error"] == "expected a WebSocket upgrade request"


async def test_star_allows_any_origin(sqlite_db: Database, sqlite_engine: RoutingEngine) -> None:
    client = await start(create_app(chat_settings(allowed_origins=["*"]), sqlite_db,
                                    engine=sqlite_engine))
    try:
        ws = await client.ws_connect("/webchat/ws", headers={"Origin": "https://any.example"})
        await ws.close()
    finally:
        await client.close()


# --- messages in ---------------------------------------------------------------------


async def test_message_reaches_the_bus_then_routing_makes_a_ticket(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    await add_agent(db)
    chat, welcome = await open_chat(client, lang="zh")
    assert welcome["agents_online"] is True and welcome["history"] == []
    await chat.send(type="profile", name="张伟", email="Zhang.Wei@Example.CN",
                    phone="138 0013 8000")
    await chat.expect("profile_ok")
    with capture_logs() as logs:
        cmid = await chat.message("你好，我的订单还没发货，请帮忙查一下。")
        ack = await chat.expect("ack")
    assert ack == {"type": "ack", "client_message_id": cmid, "duplicate": False}
    # Acknowledged means durably on the bus.
    assert await count(db, QueueEntry) == 1
    [received] = [e for e in logs if e["event"] == "webchat.message_received"]
    assert received["visitor_id"] == chat.visitor_id and received["client_message_id"] == cmid
    assert "你好" not in json.dumps(logs, ensure_ascii=False)  # never the text in the log

    await route_all(engine)
    async with db.sessions() as session:
        interaction = (await session.scalars(select(Interaction).where(INBOUND))).one()
        ticket = (await session.scalars(select(Ticket))).one()
        conversation = await session.get(Conversation, interaction.conversation_id)
        customer = await session.get(Customer, interaction.customer_id)
        identities = {(i.kind, i.value) for i in await session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == customer.id))}
    assert interaction.channel == Channel.WEBCHAT
    assert interaction.text == "你好，我的订单还没发货，请帮忙查一下。"
    assert interaction.external_id == f"webchat:{chat.visitor_id}:{cmid}"
    assert conversation is not None and conversation.thread_key == chat.visitor_id
    assert ticket.conversation_id == conversation.id
    assert customer is not None and customer.display_name == "张伟"
    assert identities == {
        (IdentityKind.WEBCHAT, chat.visitor_id),
        (IdentityKind.EMAIL, "zhang.wei@example.cn"),
        (IdentityKind.PHONE, "+8613800138000"),
    }
    await chat.ws.close()


async def test_ack_only_after_publish_returned(sqlite_db: Database) -> None:
    gate = asyncio.Event()
    published: list[InboundMessage] = []

    async def slow_publish(envelope: InboundMessage) -> bool:
        await gate.wait()
        published.append(envelope)
        return True

    await add_agent(sqlite_db)
    app = web.Application()
    setup_webchat(app, chat_settings(), sqlite_db, slow_publish)
    client = await start(app)
    try:
        chat, _ = await open_chat(client)
        cmid = await chat.message("hello")
        await chat.nothing(0.5)
        assert published == []
        gate.set()
        assert (await chat.expect("ack"))["client_message_id"] == cmid
        assert published[0].idempotency_key == f"webchat:{chat.visitor_id}:{cmid}"
    finally:
        await client.close()


async def test_failed_publish_is_an_error_frame_and_no_ack(sqlite_db: Database) -> None:
    calls = 0

    async def broken_then_fine(envelope: InboundMessage) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database is locked")
        return True

    await add_agent(sqlite_db)
    app = web.Application()
    setup_webchat(app, chat_settings(), sqlite_db, broken_then_fine)
    client = await start(app)
    try:
        chat, _ = await open_chat(client)
        cmid = await chat.message("hello")
        error = await chat.expect("error")
        assert error["code"] == "unavailable" and error["client_message_id"] == cmid
        assert not [f for f in chat.frames if f["type"] == "ack"]
        await chat.message("hello", cmid)  # the widget resends
        assert (await chat.expect("ack"))["client_message_id"] == cmid
    finally:
        await client.close()


async def test_resend_with_the_same_client_id_logs_one_interaction(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    await add_agent(db)
    chat, _ = await open_chat(client)
    cmid = await chat.message("第一条消息")
    assert (await chat.expect("ack"))["duplicate"] is False
    await chat.message("第一条消息", cmid)  # lost ack: resent while still on the bus
    assert (await chat.expect("ack"))["duplicate"] is True
    await route_all(engine)
    await chat.ws.close()
    # After a reconnect (another socket), resent once more after routing.
    again, welcome = await open_chat(client, chat.visitor_id)
    assert [h.get("client_message_id") for h in welcome["history"]
            if h["direction"] == "in"] == [cmid]
    await again.message("第一条消息", cmid)
    await again.expect("ack")
    await route_all(engine)
    assert await count(db, Interaction, INBOUND) == 1
    assert await count(db, Ticket) == 1
    await again.ws.close()


async def test_rate_limit_drops_with_an_error_frame_and_a_log_line(
    sqlite_db: Database, sqlite_engine: RoutingEngine
) -> None:
    await add_agent(sqlite_db)
    settings = chat_settings(rate_burst=3, rate_per_second=0.01)
    client = await start(create_app(settings, sqlite_db, engine=sqlite_engine))
    try:
        chat, _ = await open_chat(client)
        with capture_logs() as logs:
            sent = [await chat.message(f"消息 {i}") for i in range(5)]
            results = [await chat.next() for _ in range(5)]
        assert [r["type"] for r in results] == ["ack"] * 3 + ["error"] * 2
        assert {r["code"] for r in results[3:]} == {"rate_limited"}
        assert [r["client_message_id"] for r in results] == sent
        assert await count(sqlite_db, QueueEntry) == 3
        # The socket still works and other visitors are not limited.
        other, _ = await open_chat(client)
        await other.message("hi")
        await other.expect("ack")
    finally:
        await client.close()
    limited = [e for e in logs if e["event"] == "webchat.rate_limited"]
    assert len(limited) == 2 and limited[0]["visitor_id"] == chat.visitor_id
    assert limited[0]["client_message_id"] == sent[3]


async def test_malformed_frames_get_error_frames_and_the_socket_keeps_working(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    ws = await sqlite_client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
    chat = Chat(ws, new_id())
    await chat.message("before hello")
    assert (await chat.expect("error"))["code"] == "hello_required"
    await chat.send(type="hello", visitor_id="not-a-uuid")
    assert (await chat.expect("error"))["code"] == "invalid_visitor"
    await chat.send(type="hello", visitor_id=chat.visitor_id)
    await chat.expect("welcome")
    for junk in ["not json", "[]", '{"type": "shout"}', '{"type": "message", "text": 1}',
                 json.dumps({"type": "hello", "visitor_id": chat.visitor_id})]:
        await ws.send_str(junk)
        error = await chat.expect("error")
        assert error["code"] == "bad_frame" and error["message"]
    await ws.send_bytes(b"\x00\x01")
    assert (await chat.expect("error"))["code"] == "bad_frame"
    cmid = await chat.message("still here")
    assert (await chat.expect("ack"))["client_message_id"] == cmid
    await chat.send(type="ping")
    await chat.expect("pong")
    assert await count(sqlite_db, QueueEntry) == 1
    await ws.close()


async def test_too_many_bad_frames_close_the_socket(sqlite_client: TestClient) -> None:
    chat, _ = await open_chat(sqlite_client)
    for _ in range(20):
        await chat.ws.send_str("junk")
    codes = []
    async with asyncio.timeout(5):
        async for received in chat.ws:
            codes.append(json.loads(received.data)["code"])
    assert codes[-1] == "too_many_errors" and codes.count("bad_frame") == 20
    assert chat.ws.close_code == 1008
    # The server is fine.
    again, _ = await open_chat(sqlite_client)
    await again.ws.close()


async def test_long_messages_and_oversized_frames_are_refused(
    sqlite_db: Database, sqlite_engine: RoutingEngine
) -> None:
    await add_agent(sqlite_db)
    client = await start(create_app(chat_settings(max_message_chars=50), sqlite_db,
                                    engine=sqlite_engine))
    try:
        chat, _ = await open_chat(client)
        cmid = await chat.message("长" * 51)
        error = await chat.expect("error")
        assert error["code"] == "too_long" and error["client_message_id"] == cmid
        await chat.message("  \x00\u202e ")
        assert (await chat.expect("error"))["code"] == "empty"
        await chat.message("长" * 50)
        await chat.expect("ack")
        # A frame beyond the WebSocket limit: the socket is closed with 1009 (too big).
        with capture_logs() as logs:
            await chat.ws.send_str(json.dumps({"type": "message", "client_message_id": new_id(),
                                               "text": "x" * 200_000}))
            received = await chat.ws.receive(timeout=5)
        assert received.type == WSMsgType.CLOSE and received.data == 1009
        await asyncio.sleep(0.1)
        assert any(e["event"] == "webchat.socket_error" for e in logs)
        # ... and nothing else happens to the server.
        again, _ = await open_chat(client)
        await again.message("ok")
        await again.expect("ack")
        assert (await client.get("/healthz")).status == 200
        assert await count(sqlite_db, QueueEntry) == 2
    finally:
        await client.close()


async def test_control_characters_are_stripped_before_the_bus(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    await add_agent(db)
    chat, _ = await open_chat(client)
    await chat.message("退款\x00\x1b[31m 请求\u202e\r\n谢谢")
    await chat.expect("ack")
    await route_all(engine)
    async with db.sessions() as session:
        text = await session.scalar(select(Interaction.text).where(INBOUND))
    assert text == "退款[31m 请求\n谢谢"
    await chat.ws.close()


async def test_invalid_form_values_publish_nothing(
    sqlite_client: TestClient, sqlite_db: Database
) -> None:
    chat, _ = await open_chat(sqlite_client)
    await chat.send(type="profile", name="张伟", email="zhang.wei@")
    assert (await chat.expect("error"))["code"] == "invalid_email"
    await chat.send(type="profile", phone="12345")
    assert (await chat.expect("error"))["code"] == "invalid_phone"
    assert await count(sqlite_db, QueueEntry) == 0
    # An invalid profile in the hello is refused too; the hello itself still succeeds.
    other = new_id()
    ws = await sqlite_client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
    second = Chat(ws, other)
    await second.send(type="hello", visitor_id=other, profile={"email": "nope"})
    assert (await second.expect("error"))["code"] == "invalid_email"
    await second.expect("welcome")
    await ws.close()
    await chat.ws.close()


# --- replies out ---------------------------------------------------------------------


async def test_agent_reply_reaches_every_tab_with_the_agent_name(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    agent_id = await add_agent(db, "王芳")
    tab1, _ = await open_chat(client)
    tab2, _ = await open_chat(client, tab1.visitor_id)
    stranger, _ = await open_chat(client)
    await tab1.message("在吗？")
    await tab1.expect("ack")
    await route_all(engine)
    outbox = await reply_as_agent(db, tab1.visitor_id, "在的，请问有什么可以帮您？", agent_id)
    assert await dispatcher(db, client.app).dispatch_once() >= 1
    for tab in (tab1, tab2):
        while True:
            frame = await tab.expect("message")
            if frame["outbox_id"] == outbox.id:
                break
        assert frame["text"] == "在的，请问有什么可以帮您？"
        assert frame["agent_name"] == "王芳"
    await stranger.nothing()
    async with db.sessions() as session:
        row = await session.get(OutboxMessage, outbox.id)
        interaction = await session.get(Interaction, outbox.interaction_id)
    assert row is not None and row.status == "sent" and row.provider_id == f"webchat:{outbox.id}"
    assert interaction is not None and interaction.message_ref == f"webchat:{outbox.id}"
    for chat in (tab1, tab2, stranger):
        await chat.ws.close()


async def test_reply_while_the_visitor_is_away_is_in_the_history(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    agent_id = await add_agent(db, "王芳")
    chat, _ = await open_chat(client)
    cmid = await chat.message("我想改收货地址")
    await chat.expect("ack")
    await chat.ws.close()
    await route_all(engine)
    outbox = await reply_as_agent(db, chat.visitor_id, "好的，请发新地址。", agent_id)
    await dispatcher(db, client.app).dispatch_once()
    async with db.sessions() as session:
        assert (await session.get(OutboxMessage, outbox.id)).status == "sent"  # type: ignore[union-attr]

    again, welcome = await open_chat(client, chat.visitor_id)
    history = welcome["history"]
    assert history[0] == {**history[0], "direction": "in", "text": "我想改收货地址",
                          "client_message_id": cmid}
    [agent_reply] = [h for h in history if h.get("outbox_id") == outbox.id]
    assert agent_reply["direction"] == "out" and agent_reply["agent_name"] == "王芳"
    assert agent_reply["text"] == "好的，请发新地址。"
    assert history.index(agent_reply) > 0  # oldest first
    await again.ws.close()


async def test_history_keeps_the_last_fifty_oldest_first(
    sqlite_db: Database, sqlite_engine: RoutingEngine
) -> None:
    await add_agent(sqlite_db)
    client = await start(create_app(chat_settings(rate_burst=100), sqlite_db,
                                    engine=sqlite_engine))
    try:
        chat, _ = await open_chat(client)
        for i in range(55):
            await chat.message(f"message {i:02d}")
            await chat.expect("ack")
        await route_all(sqlite_engine)
        again, welcome = await open_chat(client, chat.visitor_id)
        texts = [h["text"] for h in welcome["history"]]
        inbound = [t for t in texts if t.startswith("message")]
        assert len(texts) == 50
        assert inbound == sorted(inbound) and inbound[-1] == "message 54"
        await again.ws.close()
        await chat.ws.close()
    finally:
        await client.close()


async def test_history_is_only_the_visitors_own_chats(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    """Typing someone's e-mail into the form links the customer but shows none of their chats."""
    await add_agent(db)
    owner, _ = await open_chat(client, profile={"email": "li.na@example.cn"})
    await owner.message("我的账户密码是多少")
    await owner.expect("ack")
    await route_all(engine)
    intruder, _ = await open_chat(client, profile={"email": "li.na@example.cn"})
    await intruder.message("hi")
    await intruder.expect("ack")
    await route_all(engine)
    _, welcome = await open_chat(client, intruder.visitor_id)
    assert [h["text"] for h in welcome["history"] if h["direction"] == "in"] == ["hi"]
    for chat in (owner, intruder):
        await chat.ws.close()


async def test_typing_event_becomes_a_typing_frame(
    sqlite_client: TestClient, sqlite_engine: RoutingEngine
) -> None:
    chat, _ = await open_chat(sqlite_client)
    other, _ = await open_chat(sqlite_client)
    await sqlite_engine.events.publish([agent_typing(chat.visitor_id, "王芳")])
    assert await chat.expect("typing") == {"type": "typing", "agent_name": "王芳"}
    await other.nothing()
    assert webchat_hub(sqlite_client.app).connections(chat.visitor_id) == 1
    for c in (chat, other):
        await c.ws.close()


# --- nobody online -------------------------------------------------------------------


async def test_offline_visitor_leaves_an_email_and_is_answered_by_email(
    client: TestClient, db: Database, engine: RoutingEngine
) -> None:
    agent_id = await add_agent(db, "王芳", Availability.OFFLINE)
    chat, welcome = await open_chat(client)
    assert welcome["agents_online"] is False
    cmid = await chat.message("周末能送货吗？")
    error = await chat.expect("error")
    assert error["code"] == "email_required" and error["client_message_id"] == cmid
    assert await count(db, QueueEntry) == 0
    await chat.send(type="profile", email="Chen.Jie@Example.CN")
    await chat.expect("profile_ok")
    await chat.message("周末能送货吗？", cmid)
    await chat.expect("ack")
    await route_all(engine)
    async with db.sessions() as session:
        interaction = (await session.scalars(select(Interaction).where(INBOUND))).one()
    assert interaction.meta["channel"] == {"reply_by_email": True}

    outbox = await reply_as_agent(db, chat.visitor_id, "周末可以送货。", agent_id,
                                  email="chen.jie@example.cn")
    assert outbox.channel == Channel.EMAIL
    assert outbox.payload["to"]["email"] == "chen.jie@example.cn"
    # No web chat frame: the e-mail adapter (not registered here) will send it.
    await dispatcher(db, client.app).dispatch_once()
    assert not [f for f in chat.frames if f["type"] == "message"]
    async with db.sessions() as session:
        row = await session.get(OutboxMessage, outbox.id)
    assert row is not None and row.status == "pending"
    # The widget still shows the answer in the history, marked as sent by e-mail.
    _, welcome = await open_chat(client, chat.visitor_id)
    [answer] = [h for h in welcome["history"] if h.get("outbox_id") == outbox.id]
    assert answer["via"] == "email" and answer["text"] == "周末可以送货。"
    await chat.ws.close()


async def test_presence_change_is_announced(client: TestClient, db: Database) -> None:
    agent_id = await add_agent(db, availability=Availability.OFFLINE)
    chat, welcome = await open_chat(client, profile={"email": "a@example.cn"})
    assert welcome["agents_online"] is False
    async with db.transaction() as session:
        await session.execute(update(Agent).where(Agent.id == agent_id)
                              .values(availability=Availability.ONLINE))
    await chat.message("hello")
    assert await chat.expect("presence") == {"type": "presence", "agents_online": True}
    await chat.expect("ack")
    await chat.ws.close()


# --- several web nodes ---------------------------------------------------------------


async def test_redis_fan_out_delivers_once_on_every_node(
    sqlite_db: Database, redis_client: Any
) -> None:
    published: list[InboundMessage] = []

    async def publish(envelope: InboundMessage) -> bool:
        published.append(envelope)
        return True

    await add_agent(sqlite_db)
    apps = []
    for _ in range(2):
        app = web.Application()
        setup_webchat(app, chat_settings(), sqlite_db, publish, redis=redis_client)
        apps.append(app)
    node_a, node_b = [await start(app) for app in apps]
    try:
        visitor = new_id()
        on_a, _ = await open_chat(node_a, visitor)
        on_b, _ = await open_chat(node_b, visitor)
        elsewhere, _ = await open_chat(node_b)
        message = OutboundMessage(outbox_id=41, channel=Channel.WEBCHAT,
                                  to=SenderHandles(visitor_id=visitor), text="来自另一节点的回复",
                                  metadata={"agent_name": "王芳"})
        assert await webchat_adapter(node_a.app).send(message) == "webchat:41"
        for chat in (on_a, on_b):
            frame = await chat.expect("message")
            assert frame["outbox_id"] == 41 and frame["agent_name"] == "王芳"
            await chat.nothing(0.5)  # exactly once
        await elsewhere.nothing()
        # Typing announced on node B's events reaches the tab on node A once.
        events = EventBus()
        webchat_hub(node_b.app).listen(events)
        await events.publish([agent_typing(visitor, "王芳")])
        for chat in (on_a, on_b):
            await chat.expect("typing")
            await chat.nothing(0.3)
        for chat in (on_a, on_b, elsewhere):
            await chat.ws.close()
    finally:
        await node_a.close()
        await node_b.close()


# --- lifecycle -----------------------------------------------------------------------


async def test_socket_without_hello_is_closed(
    sqlite_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("contact_center.webchat.HELLO_TIMEOUT", 0.3)
    ws = await sqlite_client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
    received = await ws.receive(timeout=5)
    assert received.type == WSMsgType.CLOSE and received.data == 1008
    chat, _ = await open_chat(sqlite_client)
    await chat.ws.close()


async def test_shutdown_closes_open_sockets(
    sqlite_db: Database, sqlite_engine: RoutingEngine
) -> None:
    await add_agent(sqlite_db)
    client = await start(create_app(chat_settings(), sqlite_db, engine=sqlite_engine))
    chat, _ = await open_chat(client)
    hub = webchat_hub(client.app)
    assert hub.connections(chat.visitor_id) == 1
    async with asyncio.timeout(10):
        await client.close()
    received = await chat.ws.receive(timeout=5)
    assert received.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert hub.visitors == 0
