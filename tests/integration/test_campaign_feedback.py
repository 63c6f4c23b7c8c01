"""Surveys answered on every channel, opt-out replies, unsubscribe and tracked links.

E-mail goes through the real SMTP adapter to a local aiosmtpd; Telegram through
python-telegram-bot against the fake Bot API; web chat through the hub; answers come
back through the routing engine, as in production.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from telegram import Bot

from channels.email.smtp import SmtpAdapter, SmtpConfig
from channels.telegram.inbound import TelegramIntakeConfig
from channels.telegram.intake import TelegramIntake, TelegramPoller
from channels.telegram.outbound import TelegramAdapter
from channels.webchat.adapter import WebchatAdapter
from channels.webchat.envelope import build_envelope
from channels.webchat.hub import WebchatHub
from contact_center.app import create_app
from contact_center.campaign_links import CampaignLinks, sign
from contact_center.settings import Settings
from contact_center.unsubscribe import LINKS
from crm_core.db import Database
from crm_core.models import (
    CampaignSend,
    Channel,
    Conversation,
    Customer,
    Direction,
    FeedbackResponse,
    Interaction,
    Ticket,
    TicketCategory,
    TicketPriority,
    TicketStatus,
)
from crm_core.services.feedback import feedback_statistics, record_ivr_rating
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.outbox import OutboxDispatcher
from routing.rules import RuleSet
from tests.campaign_support import (
    BASE_URL,
    SECRET,
    Clock,
    add_customer,
    config_from,
    count,
    outbox,
    scheduler,
    sends,
    utc,
)
from tests.fakes.telegram_api import BOT_ID, TOKEN, FakeTelegramApi, loads, private_message, user
from tests.mailservers import SmtpSink

NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
VISITOR = "0f9a8b7c-1d2e-4f30-8a9b-0c1d2e3f4a5b"

SURVEY = """
[[campaigns]]
key = "csat"
name = "满意度调查"
action = "survey"
trigger = { kind = "ticket_resolved", delay_minutes = 60 }
channels = ["preferred", "telegram", "webchat", "email"]
survey = { kind = "csat", window_days = 3 }

[campaigns.templates.email.zh-CN]
subject = "您对我们的服务满意吗？"
text = \"\"\"请为工单 {{ ticket.number }} 打分：
{% for score, url in survey_links %}{{ score }} 分：{{ url }}
{% endfor %}\"\"\"

[campaigns.templates.default.zh-CN]
text = "工单 {{ ticket.number }} 已处理完毕，请回复 1-5 为本次服务打分。"
"""


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """Routing on the database bus with the shipped rules."""
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT),
                         RoutingConfig(region="CN", rules=RuleSet.default()))


async def route_all(engine: RoutingEngine) -> None:
    """Route until the bus is empty."""
    while await engine.run_once("test-worker"):
        pass


async def resolved_ticket(db: Database, customer_id: int, channel: Channel, at: datetime,
                          thread_key: str | None = None) -> int:
    """A resolved ticket in a conversation on ``channel``."""
    async with db.transaction() as session:
        conversation = Conversation(customer_id=customer_id, channel=channel,
                                    thread_key=thread_key)
        session.add(conversation)
        await session.flush()
        ticket = Ticket(subject="订单还没发货", customer_id=customer_id,
                        conversation_id=conversation.id, status=TicketStatus.RESOLVED,
                        resolved_at=at)
        session.add(ticket)
        await session.flush()
        ticket.number = f"T-{ticket.id:06d}"
        return ticket.id


async def survey_sent(db: Database, clock: Clock, customer_id: int, channel: Channel,
                      thread_key: str | None = None) -> CampaignSend:
    """Resolve a ticket, let the survey campaign plan and queue its survey."""
    runner = scheduler(db, config_from(SURVEY), clock)
    await runner.tick()
    ticket_id = await resolved_ticket(db, customer_id, channel, clock.advance(minutes=1),
                                      thread_key)
    await runner.tick()
    clock.advance(minutes=61)
    report = await runner.tick()
    assert report.queued == 1
    [send] = await sends(db, ticket_id=ticket_id)
    return send


def app_client(db: Database, engine: RoutingEngine, tmp_path: Path, clock: Clock) -> TestClient:
    """The web app, signing with the test secret, its campaign pages on the test clock."""
    app = create_app(Settings(data_dir=tmp_path, secret_key=SECRET.decode()), db, engine=engine)
    app[LINKS]["now"] = clock
    return TestClient(TestServer(app))


# --- e-mail ----------------------------------------------------------------------------------


async def test_email_survey_round_trip_and_a_complaint_becomes_a_high_priority_ticket(
        db: Database, engine: RoutingEngine, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "张伟", emails=["zw@example.cn"], language="zh-CN")
    send = await survey_sent(db, clock, customer, Channel.EMAIL)
    registry = ChannelRegistry()
    adapter = SmtpAdapter(SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, security="plain",
                                     from_address="care@shop.example"),
                          FileBlobStore(tmp_path / "blobs"))
    registry.register(adapter)
    assert await OutboxDispatcher(db, registry, NO_WAIT).dispatch_once() == 1
    await adapter.close()
    [mail] = await smtp_sink.wait_for(1)
    parsed = email.message_from_bytes(mail.content, policy=email.policy.default)
    body = parsed.get_body(preferencelist=("plain",)).get_content()
    assert mail.rcpt_tos == ["zw@example.cn"]
    assert "请为工单 T-" in body and "/unsubscribe/" in body
    links = re.findall(r"https://cc\.example\.test/feedback/\S+\?score=\d", body)
    assert [link[-1] for link in links] == ["1", "2", "3", "4", "5"]
    path = urlsplit(links[1]).path + "?" + urlsplit(links[1]).query

    async with app_client(db, engine, tmp_path, clock) as client:
        page = await client.get(path)
        html = await page.text()
        assert page.status == 200
        assert 'value="2" checked' in html and "您对本次服务满意吗" in html
        clock.advance(hours=2)
        answered = await client.post(urlsplit(links[1]).path, data={
            "score": "2", "comment": "客服态度太差了，问题也没解决，我要投诉"})
        assert answered.status == 200
        assert "已为您创建工单" in await answered.text()
        again = await client.get(path)
        assert "您已评分：2" in await again.text()

    async with db.sessions() as session:
        [row] = list(await session.scalars(select(FeedbackResponse)))
    assert (row.kind, row.score, row.send_id, row.channel) == ("csat", 2, send.id,
                                                               Channel.EMAIL)
    assert row.classification == "complaint" and row.ticket_id == send.ticket_id

    await route_all(engine)
    async with db.sessions() as session:
        complaint = await session.scalar(select(Ticket).where(Ticket.id != send.ticket_id))
        row = await session.get_one(FeedbackResponse, row.id)
    assert complaint is not None
    assert complaint.priority == TicketPriority.HIGH
    assert complaint.category == TicketCategory.COMPLAINT
    assert {"feedback", "complaint"} <= set(complaint.tags)
    assert complaint.customer_id == customer
    assert row.complaint_ticket_id == complaint.id
    async with db.sessions() as session:
        stats = await feedback_statistics(session)
    assert stats.csat_average == 2.0 and stats.classes == {"complaint": 1}
    assert stats.complaints_with_ticket == 1


async def test_expired_and_tampered_survey_links(db: Database, engine: RoutingEngine,
                                                 tmp_path: Path) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "张伟", emails=["zw@example.cn"])
    send = await survey_sent(db, clock, customer, Channel.EMAIL)
    links = CampaignLinks(BASE_URL, SECRET)
    url = links.feedback_url(send.id, customer, "csat", clock.now + timedelta(days=3))
    path = urlsplit(url).path
    async with app_client(db, engine, tmp_path, clock) as client:
        assert (await client.get(path)).status == 200
        bad = await client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
        assert bad.status == 400 and (await bad.json())["error"].startswith("invalid link")
        wrong_customer = links.feedback_url(send.id, customer + 1, "csat",
                                            clock.now + timedelta(days=3))
        assert (await client.get(urlsplit(wrong_customer).path)).status == 404
        clock.advance(days=5)
        closed = await client.get(path)
        assert closed.status == 410 and "此调查已结束" in await closed.text()
        refused = await client.post(path, data={"score": "5"})
        assert refused.status == 410
    assert await count(db, FeedbackResponse) == 0


# --- Telegram ----------------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegramApi]:
    """The fake Bot API."""
    fake = FakeTelegramApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(api: FakeTelegramApi) -> AsyncIterator[Bot]:
    """python-telegram-bot pointed at the fake."""
    client = Bot(TOKEN, base_url=api.base_url, base_file_url=api.file_url)
    yield client
    await client.shutdown()


async def test_telegram_survey_buttons_round_trip_and_stop(
        db: Database, engine: RoutingEngine, api: FakeTelegramApi, bot: Bot,
        tmp_path: Path) -> None:
    clock = Clock(datetime.fromtimestamp(1764900000, UTC) - timedelta(hours=2))
    customer = await add_customer(db, "张伟", identities=[{"kind": "telegram", "value": "42"}],
                                  preferred_channel="telegram")
    tickets_before = await count(db, Ticket)
    send = await survey_sent(db, clock, customer, Channel.TELEGRAM, thread_key="42")
    blobs = FileBlobStore(tmp_path / "blobs")
    registry = ChannelRegistry()
    registry.register(TelegramAdapter(bot, blobs))
    assert await OutboxDispatcher(db, registry, NO_WAIT).dispatch_once() == 1
    [sent] = api.calls_of("sendMessage")
    assert sent.params["chat_id"] == "42"
    keyboard = loads(sent.params["reply_markup"])["inline_keyboard"]
    assert [b["callback_data"] for b in keyboard[0]] == [
        f"csat:{n}:{send.id}" for n in range(1, 6)]

    intake = TelegramIntake(bot, TelegramIntakeConfig(bot_id=BOT_ID, max_file_bytes=1024), db,
                            blobs, engine.publish)
    api.add_update("callback_query", {
        "id": "cbq-1", "from": user(42), "chat_instance": "ci",
        "data": keyboard[0][3]["callback_data"],
        "message": private_message(sent.params["text"], message_id=30)})
    await TelegramPoller(intake, timeout=0).poll_once()
    await route_all(engine)
    async with db.sessions() as session:
        [row] = list(await session.scalars(select(FeedbackResponse)))
        pressed = await session.scalar(select(Interaction).where(
            Interaction.direction == Direction.INBOUND))
    assert (row.kind, row.score, row.send_id, row.channel) == ("csat", 4, send.id,
                                                               Channel.TELEGRAM)
    assert pressed is not None and pressed.meta["channel"]["log_only"] is True
    assert "feedback:csat:4" in pressed.meta["rule_hits"]
    assert await count(db, Ticket) == tickets_before + 1  # the resolved one; none for the answer

    api.add_update("message", private_message("退订", message_id=31))
    await TelegramPoller(intake, timeout=0).poll_once()
    await route_all(engine)
    async with db.sessions() as session:
        stopped = await session.get_one(Customer, customer)
        marked = await session.get_one(CampaignSend, send.id)
    assert stopped.marketing_opt_in == {"telegram": False}
    assert marked.opted_out_at is not None
    assert await count(db, Ticket) == tickets_before + 1


# --- web chat ----------------------------------------------------------------------------------


async def test_webchat_survey_answered_with_a_number_then_a_complaint(
        db: Database, engine: RoutingEngine) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "访客", identities=[{"kind": "webchat", "value": VISITOR}],
                                  preferred_channel="webchat")
    send = await survey_sent(db, clock, customer, Channel.WEBCHAT, thread_key=VISITOR)
    registry = ChannelRegistry()
    registry.register(WebchatAdapter(WebchatHub()))
    assert await OutboxDispatcher(db, registry, NO_WAIT).dispatch_once() == 1
    [message] = await outbox(db, Channel.WEBCHAT)
    assert message.status == "sent" and "请回复 1-5" in message.payload["text"]

    answer = build_envelope(visitor_id=VISITOR, client_message_id="m1", text="４",
                            received_at=clock.advance(minutes=3))
    complaint = build_envelope(visitor_id=VISITOR, client_message_id="m2",
                               text="客服态度很差，我很不满意",
                               received_at=clock.advance(minutes=2))
    await engine.publish(answer)
    await route_all(engine)
    assert await count(db, Ticket, Ticket.status == TicketStatus.RESOLVED) == 1  # an answer
    await engine.publish(complaint)
    await route_all(engine)
    async with db.sessions() as session:
        [row] = list(await session.scalars(select(FeedbackResponse)))
        ticket = await session.get_one(Ticket, send.ticket_id)
    assert (row.score, row.send_id, row.channel) == (4, send.id, Channel.WEBCHAT)
    assert row.comment == "客服态度很差，我很不满意" and row.classification == "complaint"
    # The chat continues in the solved ticket's conversation: the complaint reopens it.
    assert ticket.status == TicketStatus.OPEN and ticket.reopen_count == 1
    assert ticket.priority == TicketPriority.HIGH
    assert ticket.category == TicketCategory.COMPLAINT
    assert row.complaint_ticket_id == ticket.id


async def test_a_number_without_an_open_survey_is_an_ordinary_message(
        db: Database, engine: RoutingEngine) -> None:
    await add_customer(db, "访客", identities=[{"kind": "webchat", "value": VISITOR}])
    await engine.publish(build_envelope(visitor_id=VISITOR, client_message_id="m1", text="5"))
    await route_all(engine)
    assert await count(db, FeedbackResponse) == 0
    assert await count(db, Ticket) == 1


async def test_stop_in_web_chat_stops_automated_messages_there(
        db: Database, engine: RoutingEngine) -> None:
    customer = await add_customer(db, "访客", identities=[{"kind": "webchat", "value": VISITOR}],
                                  marketing_opt_in={"webchat": True, "email": True})
    await engine.publish(build_envelope(visitor_id=VISITOR, client_message_id="m1", text="STOP"))
    await route_all(engine)
    async with db.sessions() as session:
        stopped = await session.get_one(Customer, customer)
    assert stopped.marketing_opt_in == {"webchat": False, "email": True}
    assert await count(db, Ticket) == 0
    from crm_core.models import AuditLog

    assert await count(db, AuditLog, AuditLog.action == "opt_out") == 1


# --- the phone ----------------------------------------------------------------------------------


async def test_ivr_digits_answer_the_open_survey_once_per_call(db: Database) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "张伟", emails=["zw@example.cn"])
    send = await survey_sent(db, clock, customer, Channel.EMAIL)
    async with db.transaction() as session:
        first = await record_ivr_rating(session, customer_id=customer, digits="5",
                                        call_id="CA1", now=clock.advance(hours=1))
        again = await record_ivr_rating(session, customer_id=customer, digits="5",
                                        call_id="CA1", now=clock.now)
        ignored = await record_ivr_rating(session, customer_id=customer, digits="9",
                                          call_id="CA2", now=clock.now)
    assert first is not None and again is not None and first.id == again.id
    assert (first.score, first.channel, first.send_id) == (5, Channel.PHONE, send.id)
    assert ignored is None
    clock.advance(days=4)  # the survey closed: a later rating stands alone
    async with db.transaction() as session:
        alone = await record_ivr_rating(session, customer_id=customer, digits="3",
                                        call_id="CA3", now=clock.now)
    assert alone is not None and alone.send_id is None and alone.ticket_id == send.ticket_id


# --- unsubscribe and tracked links -----------------------------------------------------------


async def test_unsubscribe_link_confirms_then_opts_out_and_refuses_tampering(
        db: Database, engine: RoutingEngine, tmp_path: Path) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "张伟", emails=["zw@example.cn"],
                                  marketing_opt_in={"email": True})
    send = await survey_sent(db, clock, customer, Channel.EMAIL)
    [message] = await outbox(db)
    url = re.search(r"https://cc\.example\.test(/unsubscribe/\S+)", message.payload["text"])
    assert url is not None
    path = url.group(1)
    body, mac = path.rsplit("/", 1)[1].split(".")
    async with app_client(db, engine, tmp_path, clock) as client:
        page = await client.get(path)
        assert page.status == 200 and "确认退订" in await page.text()
        async with db.sessions() as session:  # a GET changes nothing
            assert (await session.get_one(Customer, customer)).marketing_opt_in == {
                "email": True}
        flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
        for bad in (f"/unsubscribe/{body}.{flipped}", "/unsubscribe/garbage",
                    f"/unsubscribe/{sign(SECRET, 'feedback', {'s': send.id, 'c': customer})}",
                    f"/unsubscribe/{sign(b'another secret', 'unsubscribe', {'c': customer})}"):
            for method in (client.get, client.post):
                refused = await method(bad)
                assert refused.status == 400, bad
                assert refused.content_type == "application/json"
                assert "invalid link" in (await refused.json())["error"]
        done = await client.post(path, data={})
        assert done.status == 200 and "已为您退订" in await done.text()
    async with db.sessions() as session:
        updated = await session.get_one(Customer, customer)
        marked = await session.get_one(CampaignSend, send.id)
    assert updated.marketing_opt_in == {"email": False} and not updated.do_not_contact
    assert marked.opted_out_at == clock.now


async def test_unsubscribe_everything_and_one_click(db: Database, engine: RoutingEngine,
                                                    tmp_path: Path) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "Mary", emails=["mary@example.com"], language="en")
    links = CampaignLinks(BASE_URL, SECRET)
    path = urlsplit(links.unsubscribe_url(0, customer, "email")).path
    async with app_client(db, engine, tmp_path, clock) as client:
        page = await client.get(path)
        assert "Stop our automated messages" in await page.text()
        one_click = await client.post(path, data={"List-Unsubscribe": "One-Click"})
        assert (await one_click.json()) == {"status": "unsubscribed"}
        everything = await client.post(path, data={"all": "1"})
        assert "We will not contact you again" in await everything.text()
    async with db.sessions() as session:
        assert (await session.get_one(Customer, customer)).do_not_contact is True


async def test_tracked_links_count_clicks_and_redirect(db: Database, engine: RoutingEngine,
                                                       tmp_path: Path) -> None:
    clock = Clock(utc(2026, 5, 4, 2, 0))
    customer = await add_customer(db, "张伟", emails=["zw@example.cn"])
    send = await survey_sent(db, clock, customer, Channel.EMAIL)
    links = CampaignLinks(BASE_URL, SECRET)
    path = urlsplit(links.track_url(send.id, "https://www.example.cn/renew?a=1&b=二")).path
    with pytest.raises(ValueError):
        links.track_url(send.id, "javascript:alert(1)")
    async with app_client(db, engine, tmp_path, clock) as client:
        for _ in range(2):
            hop = await client.get(path, allow_redirects=False)
            assert hop.status == 302
            assert hop.headers["Location"] == "https://www.example.cn/renew?a=1&b=%E4%BA%8C"
        evil = sign(SECRET, "redirect", {"s": send.id, "u": "javascript:alert(1)"})
        assert (await client.get(f"/r/{evil}", allow_redirects=False)).status == 400
        assert (await client.get(path + "x", allow_redirects=False)).status == 400
    async with db.sessions() as session:
        row = await session.get_one(CampaignSend, send.id)
    assert row.click_count == 2 and row.clicked_at == clock.now

