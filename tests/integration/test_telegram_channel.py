"""The Telegram channel against a local fake Bot API: polling, webhook, replies, errors.

python-telegram-bot talks to the fake over HTTP exactly as to api.telegram.org; the
tests assert the requests it sent. Routing runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from telegram import Bot

from channels.telegram.inbound import TelegramIntakeConfig
from channels.telegram.intake import TelegramIntake, TelegramPoller
from channels.telegram.outbound import TelegramAdapter
from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import (
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    IdentityKind,
    Interaction,
    OutboxMessage,
    QuarantinedMessage,
    QueueEntry,
    Ticket,
)
from crm_core.services.customers import create_customer
from crm_core.services.link_tokens import issue_link_token
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import SenderHandles
from routing.intake import load_cursor
from routing.outbox import OutboxDispatcher, enqueue_reply
from routing.rules import RuleSet
from tests.fakes.telegram_api import (
    BOT_ID,
    TOKEN,
    FakeTelegramApi,
    loads,
    private_message,
    user,
)

NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
INBOUND = Interaction.direction == Direction.INBOUND


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegramApi]:
    """The fake Bot API, listening."""
    fake = FakeTelegramApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(api: FakeTelegramApi) -> AsyncIterator[Bot]:
    """A real python-telegram-bot client pointed at the fake."""
    client = Bot(TOKEN, base_url=api.base_url, base_file_url=api.file_url)
    yield client
    await client.shutdown()


@pytest.fixture
def engine(db: Database) -> RoutingEngine:
    """The routing engine on the database bus."""
    return RoutingEngine(db, DatabaseBus(db, NO_WAIT),
                         RoutingConfig(region="CN", rules=RuleSet.default()))


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    """A private blob store."""
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def intake(
    bot: Bot, db: Database, blobs: FileBlobStore, engine: RoutingEngine
) -> TelegramIntake:
    """The bot's intake, publishing to the engine's bus; files up to 1 KiB."""
    config = TelegramIntakeConfig(bot_id=BOT_ID, max_file_bytes=1024)
    return TelegramIntake(bot, config, db, blobs, engine.publish)


async def route_all(engine: RoutingEngine) -> None:
    """Route until the bus is empty."""
    while await engine.run_once("test-worker"):
        pass


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_polling_reads_text_photos_files_contacts_and_skips_the_rest(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
    blobs: FileBlobStore,
) -> None:
    """Every kind of update lands or is skipped; the offset moves only past handled ones."""
    api.add_file("photo-big", b"\xff\xd8jpeg-bytes")
    api.add_file("doc-big", b"x" * 5000)
    api.add_update("message", private_message("你好，我想查订单", message_id=1))
    api.add_update("message", private_message(None, message_id=2, caption="发票照片", photo=[
        {"file_id": "photo-small", "file_unique_id": "s", "width": 90, "height": 90,
         "file_size": 10},
        {"file_id": "photo-big", "file_unique_id": "b", "width": 800, "height": 600,
         "file_size": 12},
    ]))
    api.add_update("message", private_message(None, message_id=3, document={
        "file_id": "doc-big", "file_unique_id": "d", "file_name": "合同.pdf",
        "mime_type": "application/pdf", "file_size": 5000}))
    api.add_update("message", {**private_message("group chatter", message_id=4),
                               "chat": {"id": -100, "type": "group", "title": "fans"}})
    api.add_update("poll", {"id": "p1", "question": "?", "options": [], "total_voter_count": 0,
                            "is_closed": False, "is_anonymous": True, "type": "regular",
                            "allows_multiple_answers": False})
    api.add_update("edited_message", {**private_message("你好，我想查订单 123", message_id=1),
                                      "edit_date": 1764900100})
    poller = TelegramPoller(intake, timeout=0)
    assert await poller.poll_once() == 6
    last = api.updates[-1]["update_id"]
    assert (await load_cursor(db, Channel.TELEGRAM, f"bot:{BOT_ID}"))["offset"] == last + 1
    assert await poller.poll_once() == 0
    assert api.calls_of("getUpdates")[-1].params["offset"] == str(last + 1)
    await route_all(engine)

    async with db.sessions() as session:
        rows = list(await session.scalars(
            select(Interaction).where(INBOUND).order_by(Interaction.id)))
        customers = await session.scalar(select(func.count()).select_from(Customer))
    assert [r.text for r in rows] == ["你好，我想查订单", "发票照片", "", "你好，我想查订单 123"]
    assert customers == 1  # one person, one customer
    photo = rows[1].attachments[0]
    assert photo["content_type"] == "image/jpeg"
    assert await blobs.get(photo["blob_key"]) == b"\xff\xd8jpeg-bytes"
    assert rows[2].attachments == []
    assert rows[2].meta["channel"]["attachments_refused"][0]["filename"] == "合同.pdf"
    assert rows[3].meta["channel"]["edited"] is True
    assert len({r.conversation_id for r in rows}) == 1
    assert [c.params["file_id"] for c in api.calls_of("getFile")] == ["photo-big"]


async def test_the_offset_waits_until_the_update_is_on_the_bus(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
) -> None:
    """A bus failure leaves the update with Telegram; the next poll delivers it again."""
    api.add_update("message", private_message("first", message_id=1))
    api.add_update("message", private_message("second", message_id=2))
    original = intake.publish
    published: list[str] = []

    async def flaky(envelope: Any) -> bool:
        if envelope.text == "second":
            raise ConnectionError("bus down")
        published.append(envelope.text)
        return await original(envelope)

    intake.publish = flaky
    poller = TelegramPoller(intake, timeout=0)
    with pytest.raises(ConnectionError):
        await poller.poll_once()
    first_id = api.updates[0]["update_id"]
    assert (await load_cursor(db, Channel.TELEGRAM, f"bot:{BOT_ID}"))["offset"] == first_id + 1
    intake.publish = original
    assert await poller.poll_once() == 1
    await route_all(engine)
    async with db.sessions() as session:
        texts = sorted(await session.scalars(select(Interaction.text).where(INBOUND)))
    assert texts == ["first", "second"]


async def test_a_shared_contact_links_to_the_customer_with_that_phone(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
) -> None:
    """The sender's own contact card carries a phone: the known customer gets the chat."""
    async with db.transaction() as session:
        known = await create_customer(session, {
            "display_name": "张伟", "identities": [{"kind": "phone", "value": "13800138000"}],
        }, actor="test", region="CN")
    api.add_update("message", private_message(None, message_id=1, contact={
        "phone_number": "8613800138000", "first_name": "伟", "last_name": "张", "user_id": 42}))
    await TelegramPoller(intake, timeout=0).poll_once()
    await route_all(engine)
    async with db.sessions() as session:
        identity = await session.scalar(select(CustomerIdentity).where(
            CustomerIdentity.kind == IdentityKind.TELEGRAM, CustomerIdentity.value == "42"))
    assert identity is not None and identity.customer_id == known.id
    assert await count(db, Customer) == 1


async def test_start_with_a_link_token_ties_the_telegram_user_to_the_customer_once(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
) -> None:
    """``/start <token>`` links; the same token from someone else links nobody."""
    async with db.transaction() as session:
        known = await create_customer(session, {
            "display_name": "李娜", "identities": [{"kind": "email", "value": "li@example.cn"}],
        }, actor="test", region="CN")
        token = await issue_link_token(session, known.id)
    api.add_update("message", private_message(f"/start {token}", user_id=42, message_id=1))
    api.add_update("message", private_message(f"/start {token}", user_id=99, message_id=2))
    await TelegramPoller(intake, timeout=0).poll_once()
    await route_all(engine)
    async with db.sessions() as session:
        owners = dict((await session.execute(select(
            CustomerIdentity.value, CustomerIdentity.customer_id).where(
            CustomerIdentity.kind == IdentityKind.TELEGRAM))).all())
    assert owners["42"] == known.id
    assert owners["99"] != known.id  # a used token is worth nothing


async def test_a_malformed_update_is_quarantined_and_polling_goes_on(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
) -> None:
    """An update that does not parse is kept for an admin; the next one still lands."""
    api.add_raw_update({"update_id": 1, "message": {"message_id": "not-a-number"}})
    api.add_update("message", private_message("still here", message_id=5))
    assert await TelegramPoller(intake, timeout=0).poll_once() == 2
    await route_all(engine)
    async with db.sessions() as session:
        item = (await session.scalars(select(QuarantinedMessage))).one()
    assert item.channel == Channel.TELEGRAM and item.source_ref == "1"
    assert await count(db, Interaction, INBOUND) == 1


async def _telegram_conversation(db: Database) -> tuple[Any, Any]:
    async with db.transaction() as session:
        customer = await create_customer(session, {
            "display_name": "张伟", "identities": [{"kind": "telegram", "value": "42"}],
        }, actor="test", region="CN")
        conversation = Conversation(customer_id=customer.id, channel=Channel.TELEGRAM,
                                    thread_key="42")
        session.add(conversation)
        await session.flush()
    return customer, conversation


async def test_replies_send_text_keyboards_and_files_and_honour_flood_limits(
    api: FakeTelegramApi, bot: Bot, db: Database, blobs: FileBlobStore,
) -> None:
    """The exact Bot API requests of a reply; a 429 is waited out, a 403 fails for good."""
    customer, conversation = await _telegram_conversation(db)
    image = await blobs.put(b"\x89PNG-bytes")
    async with db.transaction() as session:
        for text in ("您好，这是您的发票。", "blocked"):
            await enqueue_reply(
                session, conversation=conversation, customer=customer, channel=Channel.TELEGRAM,
                to=SenderHandles(telegram_id="42"), text=text,
                attachments=[{"blob_key": image, "filename": "发票.png",
                              "content_type": "image/png", "size": 11}]
                if text != "blocked" else None,
            )
        first = await session.scalar(select(OutboxMessage).order_by(OutboxMessage.id).limit(1))
        first.payload = {**first.payload, "metadata": {
            **first.payload["metadata"],
            "buttons": [[{"text": "满意", "data": "csat:5"}, {"text": "不满意", "data": "csat:1"}]],
        }}
    registry = ChannelRegistry()
    registry.register(TelegramAdapter(bot, blobs))
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await dispatcher.dispatch_once(limit=1)
    messages = api.calls_of("sendMessage")
    assert len(messages) == 2  # the flood wait, then the real send
    assert messages[-1].params["chat_id"] == "42"
    assert messages[-1].params["text"] == "您好，这是您的发票。"
    assert "reply_markup" not in messages[-1].params  # the keyboard rides on the last part
    [photo] = api.calls_of("sendPhoto")
    assert photo.files["photo"] == b"\x89PNG-bytes"
    assert loads(photo.params["reply_markup"])["inline_keyboard"][0][0] == {
        "text": "满意", "callback_data": "csat:5"}

    api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    await dispatcher.dispatch_once()
    async with db.sessions() as session:
        rows = list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    assert [r.status for r in rows] == ["sent", "failed"]
    assert "blocked" in (rows[1].last_error or "")
    assert rows[0].provider_id is not None


async def test_a_server_error_is_retried_later(
    api: FakeTelegramApi, bot: Bot, db: Database, blobs: FileBlobStore,
) -> None:
    """A 502 from Telegram leaves the reply pending; the next round sends it."""
    customer, conversation = await _telegram_conversation(db)
    async with db.transaction() as session:
        await enqueue_reply(session, conversation=conversation, customer=customer,
                            channel=Channel.TELEGRAM, to=SenderHandles(telegram_id="42"),
                            text="稍等")
    registry = ChannelRegistry()
    registry.register(TelegramAdapter(bot, blobs))
    dispatcher = OutboxDispatcher(db, registry, NO_WAIT)
    api.fail_next("sendMessage", 502, "Bad Gateway")
    await dispatcher.dispatch_once()
    async with db.sessions() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.status == "pending"
    await dispatcher.dispatch_once()
    async with db.sessions() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.status == "sent"


@pytest.fixture
async def webhook_client(
    api: FakeTelegramApi, db: Database, engine: RoutingEngine, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TestClient]:
    """Our app in webhook mode, with a test client."""
    monkeypatch.setenv("CC_TG_SECRET", "s3cret-token_1")
    settings = Settings(
        data_dir=tmp_path,
        telegram={"token": TOKEN, "mode": "webhook", "webhook_secret_env": "CC_TG_SECRET",
                  "api_base_url": api.base_url, "api_file_url": api.file_url},
    )
    app = create_app(settings, db, engine=engine)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_the_webhook_checks_the_secret_and_answers_after_the_bus(
    webhook_client: TestClient, api: FakeTelegramApi, engine: RoutingEngine, db: Database,
) -> None:
    """401 without the secret, 400 for junk (kept), 200 once the update is on the bus."""
    update = {"update_id": 9001, "message": private_message("webhook 你好", message_id=7)}
    refused = await webhook_client.post("/webhooks/telegram", json=update)
    assert refused.status == 401 and (await refused.json())["ok"] is False
    wrong = await webhook_client.post("/webhooks/telegram", json=update,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
    assert wrong.status == 401
    headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1"}
    junk = await webhook_client.post("/webhooks/telegram", data=b"{not json", headers=headers)
    assert junk.status == 400 and "JSON" in (await junk.json())["error"]
    bad = await webhook_client.post("/webhooks/telegram", headers=headers,
                                    json={"update_id": 9002, "message": {"message_id": "x"}})
    assert bad.status == 400 and await count(db, QuarantinedMessage) == 1
    ok = await webhook_client.post("/webhooks/telegram", json=update, headers=headers)
    assert ok.status == 200 and (await ok.json())["status"] == "queued"
    again = await webhook_client.post("/webhooks/telegram", json=update, headers=headers)
    assert (await again.json())["status"] == "duplicate"
    assert await count(db, QueueEntry) == 1
    await route_all(engine)
    assert await count(db, Interaction, INBOUND) == 1
    assert await count(db, Ticket) == 1


async def test_the_webhook_asks_for_redelivery_when_the_bus_is_down(
    webhook_client: TestClient, engine: RoutingEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """503 tells Telegram to deliver again; nothing is lost."""
    async def down(*_args: Any, **_kwargs: Any) -> bool:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(engine.bus, "publish", down)
    update = {"update_id": 9100, "message": private_message("hello", message_id=8)}
    response = await webhook_client.post(
        "/webhooks/telegram", json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1"})
    assert response.status == 503
    assert "again" in (await response.json())["error"]


async def test_a_button_press_becomes_a_message_and_is_answered(
    api: FakeTelegramApi, intake: TelegramIntake, engine: RoutingEngine, db: Database,
) -> None:
    """Inline keyboard callbacks (survey answers) reach routing; Telegram gets its answer."""
    api.add_update("callback_query", {
        "id": "cbq-1", "from": user(42), "chat_instance": "ci", "data": "csat:5",
        "message": private_message("您对本次服务满意吗？", message_id=30)})
    await TelegramPoller(intake, timeout=0).poll_once()
    await route_all(engine)
    async with db.sessions() as session:
        row = await session.scalar(select(Interaction).where(INBOUND))
    assert row is not None and row.text == "csat:5"
    assert row.meta["channel"]["button"] == "csat:5"
    assert [c.params["callback_query_id"] for c in api.calls_of("answerCallbackQuery")] == [
        "cbq-1"]
