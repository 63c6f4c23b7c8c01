"""Whole phone calls as sequences of signed webhook posts, on SQLite and PostgreSQL.

Each step posts what a Twilio-compatible provider posts (form fields, a valid
``X-Twilio-Signature``), parses the TwiML we answer as XML, and follows its URLs the way
the provider would. The effects on call records, the bus and tickets are asserted too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from channels.voice.signature import compute_signature
from contact_center.app import create_app
from contact_center.settings import Settings
from contact_center.voice_webhook import SCREEN_POP, VOICE_KEY
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    CallRecord,
    Channel,
    Conversation,
    Customer,
    Interaction,
    InteractionKind,
    Ticket,
    TicketStatus,
)
from crm_core.services.agents import create_agent
from crm_core.services.customers import create_customer
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.events import Event
from routing.rules import RuleSet

TOKEN = "twilio-auth-token-for-tests-0001"
CTI_TOKEN = "cti-secret-token"
BASE = "https://cc.shop.example"
OPEN = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai
CLOSED = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)  # Sunday
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """The routing engine on the database bus."""
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT),
                         RoutingConfig(region="CN", rules=RuleSet.default()))


@pytest.fixture
async def client(db: Database, engine: RoutingEngine, tmp_path: Path) -> AsyncIterator[TestClient]:
    """Our app with the voice and CTI webhooks, open for business."""
    settings = Settings(data_dir=tmp_path, http={"public_base_url": BASE},
                        voice={"auth_token": TOKEN, "cti_token": CTI_TOKEN})
    app = create_app(settings, db, engine=engine)
    app[VOICE_KEY].now = lambda: OPEN  # type: ignore[attr-defined]
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


class Call:
    """One caller's side of a call: posts signed steps, follows the TwiML."""

    def __init__(self, client: TestClient, sid: str, number: str = "+8613900001111") -> None:
        self.client = client
        self.sid = sid
        self.number = number
        self.twiml: ET.Element | None = None

    async def post(self, url: str, **fields: str) -> ET.Element:
        """Post one step (``url`` absolute or a path) and keep the TwiML."""
        path = url.removeprefix(BASE)
        params = {"CallSid": self.sid, "From": self.number, "To": "+861058000000", **fields}
        signature = compute_signature(TOKEN, BASE + path, params)
        response = await self.client.post(path, data=params,
                                          headers={"X-Twilio-Signature": signature})
        assert response.status == 200, await response.text()
        assert response.content_type == "application/xml"
        self.twiml = ET.fromstring(await response.text())
        return self.twiml

    async def start(self) -> ET.Element:
        """The provider announces the call."""
        return await self.post("/webhooks/voice/incoming", Direction="inbound",
                               CallStatus="ringing")

    def says(self) -> list[tuple[str, str]]:
        """(language, text) of every ``<Say>`` in the last TwiML."""
        assert self.twiml is not None
        return [(e.get("language", ""), e.text or "") for e in self.twiml.iter("Say")]

    def spoken(self) -> str:
        """All text said in the last TwiML."""
        return " ".join(text for _, text in self.says())

    def verb(self, name: str) -> ET.Element:
        """The first verb of that name in the last TwiML."""
        assert self.twiml is not None
        element = self.twiml.find(f".//{name}")
        assert element is not None, ET.tostring(self.twiml, encoding="unicode")
        return element

    async def press(self, digits: str) -> ET.Element:
        """Answer the pending ``<Gather>`` with keys."""
        return await self.post(self.verb("Gather").get("action", ""), Digits=digits)

    async def speak(self, words: str) -> ET.Element:
        """Answer the pending ``<Gather>`` with speech."""
        return await self.post(self.verb("Gather").get("action", ""), SpeechResult=words)

    async def silence(self) -> ET.Element:
        """Say nothing: the provider follows the ``<Redirect>`` after the ``<Gather>``."""
        return await self.post(self.verb("Redirect").text or "")

    async def follow(self) -> ET.Element:
        """Follow a ``<Redirect>``."""
        return await self.post(self.verb("Redirect").text or "")


async def route_all(engine: RoutingEngine) -> None:
    """Route until the bus is empty."""
    while await engine.run_once("test-worker"):
        pass


async def record_of(db: Database, sid: str) -> CallRecord:
    async with db.sessions() as session:
        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == sid))
    assert record is not None
    return record


async def known_caller(db: Database) -> Customer:
    """于伟 (Mr. Yu), Chinese speaker, with an open ticket."""
    async with db.transaction() as session:
        customer = await create_customer(session, {
            "display_name": "于伟", "family_name": "于", "language": "zh-CN",
            "custom_attributes": {"salutation": "先生"},
            "identities": [{"kind": "phone", "value": "13800138000"}],
        }, actor="test", region="CN")
        conversation = Conversation(customer_id=customer.id, channel=Channel.EMAIL)
        session.add(conversation)
        await session.flush()
        ticket = Ticket(subject="发票", customer_id=customer.id, conversation_id=conversation.id,
                        status=TicketStatus.OPEN, tags=[])
        session.add(ticket)
        await session.flush()
        ticket.number = "T-000777"
    return customer


async def test_unknown_caller_chooses_english_and_asks_for_a_callback(
    client: TestClient, db: Database, engine: RoutingEngine,
) -> None:
    """Language menu in both languages → English menu → callback → goodbye; a lead and a
    tagged ticket come out of it."""
    call = Call(client, "CA-unknown-1")
    await call.start()
    gather = call.verb("Gather")
    assert gather.get("input") == "dtmf speech"
    assert "普通话服务请按1" in call.spoken() and "For English, press 2" in call.spoken()
    await call.press("2")
    assert call.verb("Gather").get("language") == "en-US"
    assert "Hello, and thank you for calling" in call.spoken()
    assert "To have us call you back, press 3" in call.spoken()
    await call.speak("please call me back")
    assert "An agent will call you back" in call.spoken()
    await call.follow()
    assert "Thank you for calling. Goodbye." in call.spoken()
    call.verb("Hangup")

    record = await record_of(db, "CA-unknown-1")
    assert record.outcome == "callback" and record.language == "en"
    assert record.path[0] == "language"
    assert {"hours", "welcome", "main_menu", "callback"} <= set(record.path)
    assert [e["event"] for e in record.events][:2] == ["incoming", "menu"]
    await route_all(engine)
    async with db.sessions() as session:
        lead = await session.scalar(select(Customer))
        ticket = await session.scalar(select(Ticket))
        calls = list(await session.scalars(
            select(Interaction).where(Interaction.kind == InteractionKind.CALL)))
    assert lead is not None and lead.display_name == "+8613900001111"
    assert ticket is not None and ticket.tags == ["callback"]
    assert len(calls) == 2 and len({c.conversation_id for c in calls}) == 1


async def test_known_caller_is_greeted_by_name_and_hears_the_ticket_status(
    client: TestClient, db: Database,
) -> None:
    """于先生 is greeted in Chinese without a language menu; his open ticket comes first."""
    await known_caller(db)
    call = Call(client, "CA-known-1", number="+86 138 0013 8000")
    await call.start()
    spoken = call.spoken()
    assert "于先生，您好！欢迎再次致电" in spoken
    assert "您的工单 T-000777 正在处理中" in spoken
    assert call.verb("Gather").get("language") == "zh-CN"
    await call.press("1")
    assert "您最近的工单 T-000777 当前状态：正在处理中" in call.spoken()
    await call.follow()
    assert "查询工单进度请按1" in call.spoken()  # back in the main menu
    record = await record_of(db, "CA-known-1")
    assert record.customer_id is not None and record.outcome == "self_service"


async def test_wrong_keys_and_silence_are_asked_again_then_handled(
    client: TestClient, db: Database,
) -> None:
    """An unknown digit: "输入有误" and the menu again; silence: "没有收到"; the attempt
    counter travels in the signed state."""
    call = Call(client, "CA-invalid-1")
    await call.start()
    await call.press("1")  # 中文
    await call.press("7")
    assert "抱歉，您的输入有误" in call.spoken() and "查询工单进度请按1" in call.spoken()
    assert ".1." in (call.verb("Gather").get("action") or "")
    await call.silence()
    assert "抱歉，我们没有收到您的选择" in call.spoken()
    record = await record_of(db, "CA-invalid-1")
    inputs = [e for e in record.events if e["event"] == "input"]
    assert inputs[-2]["digits"] == "7" and inputs[-1]["timeout"] is True


async def test_voicemail_with_transcription_opens_a_ticket(
    client: TestClient, db: Database, engine: RoutingEngine,
) -> None:
    """Press 2, record, transcription arrives: the call record and a ticket have both."""
    call = Call(client, "CA-vm-1")
    await call.start()
    await call.press("1")
    await call.speak("我要留言")
    record_verb = call.verb("Record")
    assert record_verb.get("transcribe") == "true" and record_verb.get("maxLength") == "120"
    await call.post(record_verb.get("action") or "", RecordingUrl="https://api.example/rec/RE1",
                    RecordingDuration="14")
    await call.follow()
    assert "感谢您的来电，再见" in call.spoken()
    await call.post(record_verb.get("transcribeCallback") or "", TranscriptionStatus="completed",
                    TranscriptionText="我的快递三天没到，请回电。",
                    RecordingUrl="https://api.example/rec/RE1")
    record = await record_of(db, "CA-vm-1")
    assert record.outcome == "voicemail" and record.recording_seconds == 14
    assert record.transcription == "我的快递三天没到，请回电。"
    await route_all(engine)
    async with db.sessions() as session:
        texts = list(await session.scalars(select(Interaction.text).order_by(Interaction.id)))
        tickets = await session.scalar(select(func.count()).select_from(Ticket))
    assert any("RE1" in (t or "") for t in texts)
    assert any("我的快递三天没到" in (t or "") for t in texts)
    assert tickets == 1


async def _agent(db: Database, login: str, *, capacity: int = 3) -> Agent:
    async with db.transaction() as session:
        agent = await create_agent(
            session, login=login, display_name="王芳", password="agent-pass-2026",
            actor="test", languages=["zh-CN", "en"], capacity=capacity,
            availability=Availability.ONLINE)
        agent.phone = "+8613700000000"
    return agent


async def test_a_free_agent_is_dialled_with_a_screen_pop_then_voicemail_on_no_answer(
    client: TestClient, db: Database, engine: RoutingEngine,
) -> None:
    """0 → the online agent's phone rings and their console shows the caller's card;
    no answer → voicemail."""
    customer = await known_caller(db)
    agent = await _agent(db, "wangfang")
    pops: list[Event] = []

    async def listen(event: Event) -> None:
        pops.append(event)

    engine.events.subscribe(SCREEN_POP, listen)
    call = Call(client, "CA-agent-1", number="+8613800138000")
    await call.start()
    await call.press("0")
    dial = call.verb("Dial")
    assert call.verb("Number").text == "+8613700000000"
    assert "正在为您转接人工客服" in call.spoken()
    assert [p.data["customer_id"] for p in pops] == [customer.id]
    assert pops[0].data["agent_id"] == agent.id and pops[0].data["ticket_number"] == "T-000777"
    await call.post(dial.get("action") or "", DialCallStatus="no-answer")
    await call.follow()
    assert "客服人员暂时都在忙" in call.spoken()
    call.verb("Record")
    record = await record_of(db, "CA-agent-1")
    assert record.agent_id == agent.id
    assert [e["event"] for e in record.events if e["event"].startswith("dial")] == [
        "dialling_agent", "dial_done"]


async def test_busy_agents_mean_the_queue_with_position_then_voicemail(
    client: TestClient, db: Database, engine: RoutingEngine,
) -> None:
    """The only agent is at capacity: hold with the queue position; after the longest wait
    the caller leaves the queue for voicemail."""
    agent = await _agent(db, "busy", capacity=1)
    async with db.transaction() as session:
        other = await create_customer(session, {"display_name": "占线"}, actor="t", region="CN")
        session.add(Conversation(customer_id=other.id, channel=Channel.EMAIL,
                                 assignee_id=agent.id))
    call = Call(client, "CA-queue-1")
    await call.start()
    await call.press("1")
    await call.press("0")
    enqueue = call.verb("Enqueue")
    assert enqueue.text == "一线客服 Front line"
    wait_url = enqueue.get("waitUrl") or ""
    await call.post(wait_url, QueuePosition="2", QueueTime="5")
    assert "您前面还有2位客户" in call.spoken()
    call.verb("Pause")
    await call.post(wait_url, QueuePosition="1", QueueTime="130")
    call.verb("Leave")
    await call.post(enqueue.get("action") or "", QueueResult="leave")
    await call.follow()
    assert "客服人员暂时都在忙" in call.spoken()
    call.verb("Record")
    assert (await record_of(db, "CA-queue-1")).status == "queued"


async def test_out_of_hours_goes_to_voicemail(client: TestClient, db: Database) -> None:
    """On a Sunday the caller hears the opening hours and can leave a message."""
    client.server.app[VOICE_KEY].now = lambda: CLOSED  # type: ignore[attr-defined]
    call = Call(client, "CA-closed-1")
    await call.start()
    await call.press("2")
    assert "We are closed now" in call.spoken()
    assert call.verb("Record") is not None


async def test_status_callbacks_complete_the_record(client: TestClient, db: Database) -> None:
    """completed with a duration; busy and no-answer are outcomes of their own."""
    call = Call(client, "CA-status-1")
    await call.start()
    await call.post("/webhooks/voice/status", CallStatus="completed", CallDuration="42")
    record = await record_of(db, "CA-status-1")
    assert record.status == "completed" and record.duration_seconds == 42
    assert record.ended_at is not None and record.outcome == "abandoned"
    busy = Call(client, "CA-status-2")
    await busy.post("/webhooks/voice/status", CallStatus="busy")
    assert (await record_of(db, "CA-status-2")).outcome == "busy"


async def test_bad_requests_are_refused_with_json(client: TestClient, db: Database) -> None:
    """A wrong signature is 403, a missing CallSid 400, a tampered state 400."""
    params = {"CallSid": "CA-bad", "From": "+8613900001111"}
    forged = await client.post("/webhooks/voice/incoming", data=params,
                               headers={"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"})
    assert forged.status == 403 and "Signature" in (await forged.json())["error"]
    unsigned = await client.post("/webhooks/voice/incoming", data=params)
    assert unsigned.status == 403
    empty: dict[str, str] = {}
    signature = compute_signature(TOKEN, BASE + "/webhooks/voice/incoming", empty)
    missing = await client.post("/webhooks/voice/incoming", data=empty,
                                headers={"X-Twilio-Signature": signature})
    assert missing.status == 400 and "CallSid" in (await missing.json())["error"]
    call = Call(client, "CA-tamper")
    await call.start()
    action = (call.verb("Gather").get("action") or "").replace(".0.", ".5.")
    path = action.removeprefix(BASE)
    fields = {"CallSid": "CA-tamper", "Digits": "1"}
    response = await client.post(path, data=fields, headers={
        "X-Twilio-Signature": compute_signature(TOKEN, BASE + path, fields)})
    assert response.status == 400 and "state" in (await response.json())["error"]


async def test_cti_events_feed_call_records_and_screen_pops(
    client: TestClient, db: Database, engine: RoutingEngine,
) -> None:
    """newCall answers with the customer card; answer pops it; hangup completes the call."""
    customer = await known_caller(db)
    agent = await _agent(db, "ext8001")
    pops: list[Event] = []

    async def listen(event: Event) -> None:
        pops.append(event)

    engine.events.subscribe(SCREEN_POP, listen)
    auth = {"Authorization": f"Bearer {CTI_TOKEN}"}
    start = "2026-12-01T02:00:00+00:00"
    new = await client.post("/webhooks/cti", headers=auth, json={
        "event": "newCall", "call_id": "pbx-1", "from": "013800138000", "to": "8001",
        "timestamp": start})
    assert new.status == 200
    card = (await new.json())["customer"]
    assert card["customer_id"] == customer.id and card["ticket_number"] == "T-000777"
    answered = await client.post("/webhooks/cti", headers=auth, json={
        "event": "answer", "call_id": "pbx-1", "from": "013800138000", "agent": "ext8001",
        "timestamp": "2026-12-01T02:00:05+00:00"})
    assert answered.status == 200
    assert [(p.data["agent_id"], p.data["customer_id"]) for p in pops] == [
        (agent.id, customer.id)]
    await client.post("/webhooks/cti", headers=auth, json={
        "event": "hangup", "call_id": "pbx-1", "timestamp": "2026-12-01T02:03:05+00:00"})
    async with db.sessions() as session:
        record = await session.scalar(select(CallRecord).where(CallRecord.provider == "cti"))
    assert record is not None and record.status == "completed"
    assert record.duration_seconds == 180 and record.outcome == "agent"
    assert record.agent_id == agent.id

    refused = await client.post("/webhooks/cti", json={"event": "newCall", "call_id": "x"},
                                headers={"Authorization": "Bearer nope"})
    assert refused.status == 401
    bad = await client.post("/webhooks/cti", headers=auth, json={"event": "ring"})
    assert bad.status == 400 and (await bad.json())["ok"] is False
    junk = await client.post("/webhooks/cti", headers=auth, data=b"{{{")
    assert junk.status == 400


