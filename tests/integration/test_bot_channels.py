"""One bot flow, three channels: the same conversation on the phone (signed Twilio-style
webhooks), Telegram (fake Bot API) and the web chat (WebSocket) reaches the same outcome.

The script: choose English, ask about an order (a wrong order number first, then a valid
one and an e-mail address: a ticket is opened), ask the knowledge base a question it
knows and one it does not (a low-confidence answer offers an agent), take the agent. The
bot sessions must agree on the nodes passed, the fields collected and the handoff.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from telegram import Bot

from channels.telegram.inbound import TelegramIntakeConfig
from channels.telegram.intake import TelegramIntake, TelegramPoller
from channels.telegram.outbound import TelegramAdapter
from channels.voice.signature import compute_signature
from contact_center.app import create_app
from contact_center.demo_knowledge import ARTICLES
from contact_center.settings import Settings, WebchatSettings
from contact_center.voice_webhook import VOICE_KEY
from contact_center.webchat import webchat_adapter
from crm_core.db import Database
from crm_core.models import (
    BotSession,
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    FeedbackResponse,
    Interaction,
    KnowledgeArticle,
    Ticket,
    UnansweredQuestion,
)
from crm_core.services.agents import create_agent
from crm_core.services.knowledge import bot_metrics, bot_session_for
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bot import BotRuntime
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import SenderHandles
from routing.flows import DEFAULT_FLOWS_PATH
from routing.outbox import OutboxDispatcher, enqueue_reply
from routing.rules import RuleSet
from routing.steps.bot import expire_handoffs
from tests.fakes.telegram_api import BOT_ID, TOKEN, FakeTelegramApi, loads, private_message, user

NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
VOICE_TOKEN = "twilio-auth-token-for-tests-0001"
BASE = "https://cc.shop.example"
ORIGIN = "https://shop.example.cn"
OPEN = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai

SCRIPT: list[str] = [
    "3",                               # order enquiry
    "12",                              # too short: asked again
    "20260001",                        # the order number
    "li.wei@example.com",              # the e-mail address → ticket, "anything else?"
    "1",                               # another question
    "how long does a refund take",     # answered from the knowledge base
    "1",                               # another question
    "can your robot sing opera",       # not known: "not sure", offer an agent
    "1",                               # talk to an agent
]
EXPECTED_NODES = [
    "menu", "order_number", "order_number", "order_email", "order_ticket", "more",
    "question", "more", "question", "unsure", "handoff",
]


def runtime() -> BotRuntime:
    """The bot on Telegram and the web chat with the shipped flows."""
    return BotRuntime(channels={"telegram": "bot", "webchat": "bot"},
                      flows_file=DEFAULT_FLOWS_PATH)


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """Routing with the bot on."""
    config = RoutingConfig(region="CN", rules=RuleSet.default(), bot=runtime())
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT), config)


async def seed_knowledge(db: Database) -> None:
    async with db.transaction() as session:
        for item in ARTICLES:
            session.add(KnowledgeArticle(language=item["language"], title=item["title"],
                                         questions=item["questions"], keywords=item["keywords"],
                                         answer=item["answer"]))


async def route_all(engine: RoutingEngine) -> None:
    while await engine.run_once("w"):
        pass


async def only_session(db: Database, channel: str) -> BotSession:
    async with db.sessions() as session:
        rows = (await session.scalars(select(BotSession).where(
            BotSession.channel == channel))).all()
    assert len(rows) == 1, rows
    return rows[0]


def after_language(path: list[str]) -> list[str]:
    """The nodes from the main menu on (the phone asks the language first)."""
    return path[path.index("menu"):]


# --- the three harnesses --------------------------------------------------------------


Send = Callable[[str], Awaitable[str]]


async def voice_conversation(db: Database, engine: RoutingEngine, tmp_path: Path,
                             script: list[str] = SCRIPT) -> list[str]:
    settings = Settings(data_dir=tmp_path, http={"public_base_url": BASE},
                        voice={"auth_token": VOICE_TOKEN, "flow": "bot"})
    app = create_app(settings, db, engine=engine)
    app[VOICE_KEY].now = lambda: OPEN  # type: ignore[attr-defined]
    client = TestClient(TestServer(app))
    await client.start_server()
    heard: list[str] = []
    twiml: dict[str, ET.Element] = {}

    async def post(url: str, **fields: str) -> ET.Element:
        path = url.removeprefix(BASE)
        params = {"CallSid": "CA-bot-1", "From": "+8613900002222", "To": "+861058000000",
                  **fields}
        signature = compute_signature(VOICE_TOKEN, BASE + path, params)
        response = await client.post(path, data=params,
                                     headers={"X-Twilio-Signature": signature})
        assert response.status == 200, await response.text()
        twiml["last"] = ET.fromstring(await response.text())
        said = " ".join(e.text or "" for e in twiml["last"].iter("Say"))
        redirect = twiml["last"].find("Redirect")
        if redirect is not None and twiml["last"].find(".//Gather") is None:
            # an action was done: the provider follows the redirect at once
            await post(redirect.text or "")
            heard[-1] = f"{said} {heard[-1]}"
        else:
            heard.append(said)
        return twiml["last"]

    async def send(text: str) -> str:
        gather = twiml["last"].find(".//Gather")
        assert gather is not None, ET.tostring(twiml["last"], encoding="unicode")
        action = gather.get("action", "")
        if text.isdigit():
            # a field is keyed in and ended with # (finishOnKey); menus take one key
            digits = text + ("#" if gather.get("finishOnKey") == "#" else "")
            await post(action, Digits=digits)
        else:
            await post(action, SpeechResult=text)
        return heard[-1]

    try:
        await post("/webhooks/voice/incoming", Direction="inbound", CallStatus="ringing")
        assert "For English, press 2" in heard[-1]
        await send("2")
        assert "service assistant" in heard[-1]
        for line in script:
            await send(line)
        if script is SCRIPT:
            assert twiml["last"].find(".//Enqueue") is not None  # waiting for an agent
    finally:
        await client.close()
    await route_all(engine)  # the call's history and its ticket through the bus
    return heard


async def telegram_conversation(db: Database, engine: RoutingEngine, tmp_path: Path,
                                script: list[str] = SCRIPT) -> list[dict[str, Any]]:
    api = FakeTelegramApi()
    await api.start()
    bot = Bot(TOKEN, base_url=api.base_url, base_file_url=api.file_url)
    try:
        intake = TelegramIntake(bot, TelegramIntakeConfig(bot_id=BOT_ID), db,
                                FileBlobStore(tmp_path / "blobs"), engine.publish)
        poller = TelegramPoller(intake, timeout=0)
        registry = ChannelRegistry()
        registry.register(TelegramAdapter(bot, FileBlobStore(tmp_path / "blobs")))
        dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
        sent: list[dict[str, Any]] = []
        ids = iter(range(1, 1000))

        async def exchange() -> dict[str, Any]:
            await poller.poll_once()
            await route_all(engine)
            await dispatcher.dispatch_once()
            calls = api.calls_of("sendMessage")
            assert len(calls) == len(sent) + 1, [c.params for c in calls]
            sent.append(calls[-1].params)
            return calls[-1].params

        async def send(text: str) -> dict[str, Any]:
            markup = loads(sent[-1].get("reply_markup")) if sent else None
            buttons = [b for row in (markup or {}).get("inline_keyboard", []) for b in row]
            if any(b["callback_data"] == text for b in buttons):
                # a button press: the option's digit comes back as callback data
                api.add_update("callback_query", {
                    "id": f"cb-{next(ids)}", "from": user(42), "chat_instance": "ci",
                    "data": text, "message": private_message("menu", message_id=900)})
            else:
                api.add_update("message", private_message(text, message_id=next(ids)))
            return await exchange()

        first = await send("/start")
        assert "For English" in first["text"]
        keyboard = loads(first["reply_markup"])["inline_keyboard"]
        assert [b["text"] for row in keyboard for b in row] == ["中文", "English"]
        menu = await send("2")
        labels = [b["text"] for row in loads(menu["reply_markup"])["inline_keyboard"]
                  for b in row]
        assert labels[:3] == ["Ask a question", "Ticket status", "Order enquiry"]
        for line in script:
            await send(line)
        return sent
    finally:
        await bot.shutdown()
        await api.stop()


async def webchat_conversation(db: Database, engine: RoutingEngine,
                               script: list[str] = SCRIPT) -> list[dict[str, Any]]:
    settings = Settings(webchat=WebchatSettings(allowed_origins=[ORIGIN],
                                                presence_cache_seconds=0, rate_burst=100))
    app = create_app(settings, db, engine=engine)
    client = TestClient(TestServer(app))
    await client.start_server()
    registry = ChannelRegistry()
    registry.register(webchat_adapter(app))
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    frames: list[dict[str, Any]] = []
    try:
        ws = await client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
        await ws.send_str(json.dumps({"type": "hello", "visitor_id": str(uuid.uuid4())}))
        await expect(ws, "welcome")

        async def send(text: str) -> dict[str, Any]:
            previous = frames[-1] if frames else None
            quick = [b for row in (previous or {}).get("buttons") or [] for b in row]
            # a quick reply sends the button's label, as the widget does
            label = next((b["text"] for b in quick if b["data"] == text), text)
            await ws.send_str(json.dumps({"type": "message",
                                          "client_message_id": uuid.uuid4().hex,
                                          "text": label}))
            await expect(ws, "ack")
            await route_all(engine)
            await dispatcher.dispatch_once()
            frame = await expect(ws, "message")
            frames.append(frame)
            return frame

        # written in English: the language is known, the menu comes at once
        first = await send("hello")
        assert "service assistant" in first["text"]
        assert [b["text"] for row in first["buttons"] for b in row][:2] == [
            "Ask a question", "Ticket status"]
        for line in script:
            await send(line)
        await ws.close()
        return frames
    finally:
        await client.close()


async def expect(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            received = await ws.receive()
            assert received.type == WSMsgType.TEXT, received
            frame: dict[str, Any] = json.loads(received.data)
            if frame["type"] == kind:
                return frame


# --- the test ---------------------------------------------------------------------------


async def test_the_same_flow_reaches_the_same_outcome_on_every_channel(
    db: Database, engine: RoutingEngine, tmp_path: Path,
) -> None:
    await seed_knowledge(db)
    heard = await voice_conversation(db, engine, tmp_path)
    telegram = await telegram_conversation(db, engine, tmp_path)
    webchat = await webchat_conversation(db, engine)

    sessions = {channel: await only_session(db, channel)
                for channel in ("phone", "telegram", "webchat")}
    for channel, row in sessions.items():
        assert after_language(row.path) == EXPECTED_NODES, (channel, row.path)
        assert row.fields == {"order_number": "20260001", "email": "li.wei@example.com"}, \
            channel
        assert row.status == "handoff" and row.outcome == "handoff", channel
        assert row.language == "en"
        assert row.handoff_team == "国际客服 International desk"
        said = [t["text"] for t in row.transcript if t["from"] == "bot"]
        assert any("refund to the original payment method" in t for t in said), channel
        assert any("not sure" in t for t in said), channel

    # what each customer saw or heard at the same points
    voice_lines = heard[-len(SCRIPT):]
    telegram = telegram[-len(SCRIPT):]
    webchat = webchat[-len(SCRIPT):]
    chat_lines = [m["text"] for m in telegram]
    web_lines = [f["text"] for f in webchat]
    for lines in (voice_lines, chat_lines, web_lines):
        assert "An order number has 4 to 40 letters" in lines[1]
        assert "We opened an enquiry for order 20260001 and will e-mail li.wei@example.com" \
            in lines[3]
        assert "refund to the original payment method" in lines[5]
        assert "not sure" in lines[7]
        assert "Connecting you to an agent" in lines[8]
    # buttons in the chats, a numbered menu on the phone
    more = loads(telegram[5]["reply_markup"])["inline_keyboard"]
    assert [b["text"] for row in more for b in row] == [
        "Another question", "Main menu", "No, thanks", "Talk to an agent"]
    assert [b["text"] for row in webchat[5]["buttons"] for b in row] == [
        "Another question", "Main menu", "No, thanks", "Talk to an agent"]
    assert "1 another question" in voice_lines[5]

    async with db.sessions() as session:
        tickets = (await session.scalars(select(Ticket))).all()
        unanswered = (await session.scalars(select(UnansweredQuestion))).all()
        metrics = await bot_metrics(session)
    # one order-enquiry ticket per channel (the chats' handoff message went to the same one)
    tagged = [t for t in tickets if "order-enquiry" in t.tags]
    assert len(tagged) == 3
    assert all("20260001" in t.subject for t in tagged), [t.subject for t in tagged]
    assert sorted(u.channel for u in unanswered) == ["phone", "telegram", "webchat"]
    assert {u.normalized for u in unanswered} == {"can your robot sing opera"}
    assert metrics.sessions == 3 and metrics.handed_off == 3
    # the agent's view of the call finds the call's bot session (transcript and fields)
    async with db.sessions() as session:
        call = await session.scalar(select(Conversation).where(
            Conversation.channel == Channel.PHONE))
        assert call is not None
        found = await bot_session_for(session, call)
    assert found is not None and found.fields["order_number"] == "20260001"
    assert metrics.unanswered == [("can your robot sing opera", 3)]


SURVEY_SCRIPT = [
    "1",                               # a question
    "how long does a refund take",     # answered from the knowledge base
    "3",                               # "No, thanks" → the one-question survey
    "9",                               # not on the 1–5 scale: asked again
    "4",                               # the rating
]


async def test_the_bot_survey_records_the_rating_as_csat_on_every_channel(
    db: Database, engine: RoutingEngine, tmp_path: Path,
) -> None:
    """The flow's survey action: the rating collected by its ask node becomes the
    customer's CSAT answer, whichever channel the customer used."""
    await seed_knowledge(db)
    heard = await voice_conversation(db, engine, tmp_path, SURVEY_SCRIPT)
    telegram = await telegram_conversation(db, engine, tmp_path, SURVEY_SCRIPT)
    webchat = await webchat_conversation(db, engine, SURVEY_SCRIPT)
    for lines in (heard[-2:], [m["text"] for m in telegram[-2:]],
                  [f["text"] for f in webchat[-2:]]):
        assert "number from 1 to 5" in lines[0]
        assert "Thank you for your feedback" in lines[1]

    async with db.sessions() as session:
        answers = (await session.scalars(select(FeedbackResponse))).all()
        sessions = (await session.scalars(select(BotSession))).all()
        owners = {row.channel: row.customer_id for row in sessions}
        caller = await session.scalar(select(CustomerIdentity.customer_id).where(
            CustomerIdentity.value == "+8613900002222"))
    assert sorted((a.channel.value, a.kind, a.score) for a in answers) == [
        ("phone", "csat", 4), ("telegram", "csat", 4), ("webchat", "csat", 4)]
    # a first-time caller's record is made by routing the call: the rating lands there
    owners["phone"] = owners["phone"] or caller
    for answer in answers:
        assert answer.customer_id is not None
        assert answer.customer_id == owners[answer.channel.value]
    assert {row.outcome for row in sessions} == {"survey"} or all(
        "survey" in row.path for row in sessions)


async def test_chat_handoff_shows_context_stops_the_bot_and_times_out(
    sqlite_db: Database, tmp_path: Path,
) -> None:
    """The agent joins one chat (the bot stays silent); another handoff nobody answers
    returns to the bot with an apology and the offer to leave a message."""
    db = sqlite_db
    engine = RoutingEngine(db, DatabaseBus(db, NO_WAIT), RoutingConfig(
        region="CN", rules=RuleSet.default(), bot=runtime()))
    await seed_knowledge(db)
    async with db.transaction() as session:
        agent = await create_agent(session, login="wang", display_name="王芳",
                                   password="agent-pass-2026", actor="test")
        agent_id = agent.id
    settings = Settings(webchat=WebchatSettings(allowed_origins=[ORIGIN],
                                                presence_cache_seconds=0, rate_burst=100))
    app = create_app(settings, db, engine=engine)
    client = TestClient(TestServer(app))
    await client.start_server()
    registry = ChannelRegistry()
    registry.register(webchat_adapter(app))
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    try:
        async def chat(visitor: str, *lines: str) -> aiohttp.ClientWebSocketResponse:
            ws = await client.ws_connect("/webchat/ws", headers={"Origin": ORIGIN})
            await ws.send_str(json.dumps({"type": "hello", "visitor_id": visitor, "lang": "en"}))
            await expect(ws, "welcome")
            for line in lines:
                await ws.send_str(json.dumps({"type": "message", "text": line,
                                              "client_message_id": uuid.uuid4().hex}))
                await expect(ws, "ack")
                await route_all(engine)
                await dispatcher.dispatch_once()
                await expect(ws, "message")
            return ws

        joined, waiting = str(uuid.uuid4()), str(uuid.uuid4())
        ws1 = await chat(joined, "hi", "3", "A-7788", "li@example.com", "0")
        ws2 = await chat(waiting, "hi", "0")
        async with db.sessions() as session:
            rows = {r.session_key: r for r in (await session.scalars(select(BotSession))).all()}
            conversations = {c.thread_key: c for c in
                             (await session.scalars(select(Conversation))).all()}
            tickets = (await session.scalars(select(Ticket))).all()
        first = rows[f"conversation:{conversations[joined].id}"]
        assert first.status == "handoff" and first.fields["order_number"] == "A-7788"
        assert any(t.conversation_id == conversations[joined].id for t in tickets)
        # the agent answers the first chat: from then on the bot says nothing there
        async with db.transaction() as session:
            conversation = await session.get(Conversation, conversations[joined].id)
            customer = await session.get(Customer, conversation.customer_id)
            await enqueue_reply(session, conversation=conversation, customer=customer,
                                channel=Channel.WEBCHAT, to=SenderHandles(visitor_id=joined),
                                text="您好，我是王芳 Hello, Wang Fang here", agent_id=agent_id)
        await dispatcher.dispatch_once()
        assert "Wang Fang" in (await expect(ws1, "message"))["text"]
        await ws1.send_str(json.dumps({"type": "message", "text": "3",
                                       "client_message_id": uuid.uuid4().hex}))
        await expect(ws1, "ack")
        await route_all(engine)
        assert await dispatcher.dispatch_once() == 0  # no bot reply
        # an agent who answers a chat still with the bot takes it over as well
        ws3 = await chat(str(uuid.uuid4()), "hi")
        async with db.transaction() as session:
            conversation = await session.scalar(select(Conversation).order_by(
                Conversation.id.desc()).limit(1))
            customer = await session.get(Customer, conversation.customer_id)
            await enqueue_reply(session, conversation=conversation, customer=customer,
                                channel=Channel.WEBCHAT,
                                to=SenderHandles(visitor_id=conversation.thread_key),
                                text="Hello, Wang Fang here", agent_id=agent_id)
        await dispatcher.dispatch_once()
        await expect(ws3, "message")
        await ws3.send_str(json.dumps({"type": "message", "text": "1",
                                       "client_message_id": uuid.uuid4().hex}))
        await expect(ws3, "ack")
        await route_all(engine)
        async with db.sessions() as session:
            taken = await session.scalar(select(BotSession).where(
                BotSession.conversation_id == conversation.id))
            said = [i.meta.get("bot") for i in (await session.scalars(
                select(Interaction).where(Interaction.conversation_id == conversation.id,
                                          Interaction.direction == Direction.OUTBOUND)
                .order_by(Interaction.id))).all()]
        assert taken is not None and taken.status == "agent"
        # the bot's menu, the agent; after that the bot said nothing (the usual automatic
        # acknowledgement of the routing rules may follow, as in any agent conversation)
        assert said[:2] == [True, None] and not any(said[2:])
        await ws3.close()
        # much later: the unanswered handoff goes back to the bot
        later = datetime.now(UTC) + timedelta(minutes=10)
        assert await expire_handoffs(db, engine.config.bot, later) == 1
        await dispatcher.dispatch_once()
        apology = (await expect(ws2, "message"))["text"]
        assert "Sorry, no agent could take your request" in apology
        assert "leave a message" in apology
        async with db.sessions() as session:
            rows = {r.session_key: r for r in (await session.scalars(select(BotSession))).all()}
        assert rows[f"conversation:{conversations[joined].id}"].status == "agent"
        second = rows[f"conversation:{conversations[waiting].id}"]
        assert second.status == "bot" and second.node == "leave_message"
        assert second.outcome == "handoff_timeout"
        # the message left becomes a ticket
        await ws2.send_str(json.dumps({"type": "message", "text": "Please call me tomorrow",
                                       "client_message_id": uuid.uuid4().hex}))
        await expect(ws2, "ack")
        await route_all(engine)
        await dispatcher.dispatch_once()
        assert "we have your message" in (await expect(ws2, "message"))["text"]
        async with db.sessions() as session:
            ticket = await session.scalar(select(Ticket).where(
                Ticket.conversation_id == conversations[waiting].id))
            count = await session.scalar(select(func.count()).select_from(Interaction).where(
                Interaction.conversation_id == conversations[waiting].id))
        assert ticket is not None and "bot-message" in ticket.tags
        assert count and count >= 6  # the whole bot transcript is in the conversation
        await ws1.close()
        await ws2.close()
    finally:
        await client.close()


def test_script_is_consistent() -> None:
    """The expected nodes follow the script (guards against editing one and not the other)."""
    assert len([n for n in EXPECTED_NODES[1:] if re.match(r"^\w+$", n)]) == len(SCRIPT) + 1


async def test_email_auto_reply_has_a_numbered_menu_and_a_reply_number_chooses(
    db: Database,
) -> None:
    """Where the bot answers e-mail, its menu is a numbered list; replying "2" picks."""
    from routing.envelope import InboundMessage, ThreadHints

    engine = RoutingEngine(db, DatabaseBus(db, NO_WAIT), RoutingConfig(
        region="CN", rules=RuleSet.default(),
        bot=BotRuntime(channels={"email": "bot"}, flows_file=DEFAULT_FLOWS_PATH)))
    sender = SenderHandles(email="zhang.wei@example.cn", display_name="张伟")

    def mail(key: str, text: str, reply_to: str | None = None) -> InboundMessage:
        return InboundMessage(
            channel=Channel.EMAIL, idempotency_key=key, received_at=OPEN, sender=sender,
            subject="Re: 咨询" if reply_to else "咨询", text=text,
            thread=ThreadHints(message_id=f"<{key}@example.cn>", in_reply_to=reply_to))

    await engine.publish(mail("m1", "你好，我想咨询一下"))
    await route_all(engine)
    async with db.sessions() as session:
        from crm_core.models import OutboxMessage

        [first] = (await session.scalars(select(OutboxMessage))).all()
    text = first.payload["text"]
    assert "我是智能客服小助手" in text
    assert "回复数字选择：\n1. 常见问题\n2. 工单进度" in text
    assert "buttons" not in first.payload["metadata"]
    await engine.publish(mail("m2", "2", reply_to="<m1@example.cn>"))
    await route_all(engine)
    async with db.sessions() as session:
        rows = (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        row = await session.scalar(select(BotSession))
    assert len(rows) == 2 and "没有查到您名下进行中的工单" in rows[1].payload["text"]
    assert row is not None and row.path[-2:] == ["ticket_status", "more"]
