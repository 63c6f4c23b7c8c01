"""The web chat widget in headless Chromium: a shop's page on another origin embeds it.

Our app and a tiny "shop" server run on two free ports (two origins); the routing engine
and the outbox dispatcher run in the background as in ``serve``. The test plays the
visitor in the browser and the agent side through the outbox and the event bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.settings import Settings, WebchatSettings
from contact_center.webchat import webchat_adapter
from contact_center.worker import dispatch_loop
from crm_core.db import Database
from crm_core.models import (
    Agent,
    Availability,
    Channel,
    Conversation,
    Customer,
    Direction,
    Interaction,
    OutboxMessage,
)
from routing.adapters import ChannelRegistry
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.envelope import SenderHandles
from routing.events import EventBus
from routing.outbox import OutboxDispatcher, enqueue_reply
from routing.rules import parse_rules
from tests.conftest import require_service

RULES_TEXT = (Path(__file__).resolve().parents[2] / "config" / "rules.toml").read_text(
    encoding="utf-8")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
TIMEOUT_MS = 15_000
SHOP_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>小店 · Shop</title></head>
<body><h1>欢迎光临小店</h1><p>Our products.</p>
<script src="{widget}" async></script>
</body></html>
"""


@dataclass
class Stack:
    """The running servers and the background workers of one test."""

    shop_url: str
    app: web.Application
    engine: RoutingEngine
    database: Database


async def free_site(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve an app on 127.0.0.1 on ``port`` (0: a free one)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@contextlib.asynccontextmanager
async def stack(database: Database, lang: str) -> AsyncIterator[Stack]:
    """The shop page (one origin), our app (another), routing and dispatching."""
    widget: dict[str, str] = {}

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=SHOP_PAGE.format(lang=lang, widget=widget["url"]),
                            content_type="text/html")

    shop = web.Application()
    shop.router.add_get("/", page)
    shop_runner, shop_port = await free_site(shop)
    shop_origin = f"http://127.0.0.1:{shop_port}"

    # The shipped rules without their automation: an after-hours auto-reply would make
    # the unread count depend on the time of day the test runs.
    data = tomllib.loads(RULES_TEXT)
    data.pop("automation", None)
    engine = RoutingEngine(database, DatabaseBus(database, NO_WAIT),
                           RoutingConfig(region="CN", rules=parse_rules(data)), EventBus())
    settings = Settings(webchat=WebchatSettings(allowed_origins=[shop_origin],
                                                presence_cache_seconds=0))
    app = create_app(settings, database, engine=engine)
    app_runner, app_port = await free_site(app)
    widget["url"] = f"http://127.0.0.1:{app_port}/webchat/widget.js"

    registry = ChannelRegistry()
    registry.register(webchat_adapter(app))
    stop = asyncio.Event()
    background = [
        asyncio.create_task(engine.run("browser-test", stop, idle_wait=0.05)),
        asyncio.create_task(dispatch_loop(OutboxDispatcher(database, registry, NO_WAIT), stop,
                                          idle_wait=0.05)),
    ]
    try:
        yield Stack(f"{shop_origin}/", app, engine, database)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await app_runner.cleanup()
        await shop_runner.cleanup()


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium binary (skipped when missing on a developer machine; CI fails)."""
    if not os.path.exists(CHROMIUM):
        require_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    """Headless Chromium driven by Playwright (no ``playwright install``)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def add_agent(db: Database, name: str, availability: Availability) -> int:
    async with db.transaction() as session:
        agent = Agent(login=f"agent-{name}", display_name=name, password_hash="!",
                      availability=availability)
        session.add(agent)
        await session.flush()
        return agent.id


async def wait_for_inbound(db: Database, text: str, seconds: float = 15.0) -> Interaction:
    """The agent side sees the visitor's message (routed into the database)."""
    async with asyncio.timeout(seconds):
        while True:
            async with db.sessions() as session:
                found = await session.scalar(
                    select(Interaction).where(Interaction.direction == Direction.INBOUND,
                                              Interaction.text == text))
            if found is not None:
                return found
            await asyncio.sleep(0.1)


async def agent_replies(db: Database, interaction: Interaction, text: str, agent_id: int,
                        to: SenderHandles) -> OutboxMessage:
    """What the console does when the agent answers: a reply in the outbox."""
    async with db.transaction() as session:
        conversation = await session.get(Conversation, interaction.conversation_id)
        customer = await session.get(Customer, interaction.customer_id)
        assert conversation is not None and customer is not None
        return await enqueue_reply(session, conversation=conversation, customer=customer,
                                   channel=Channel.WEBCHAT, to=to, text=text, agent_id=agent_id)


async def test_chat_in_the_browser_round_trip_and_history_after_reload(
    sqlite_db: Database, browser: Any
) -> None:
    from playwright.async_api import expect

    from channels.webchat import agent_typing

    agent_id = await add_agent(sqlite_db, "王芳", Availability.ONLINE)
    async with stack(sqlite_db, "zh-CN") as running:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(running.shop_url)
        host = page.locator("#cc-webchat")
        await expect(host).to_have_attribute("data-state", "online", timeout=TIMEOUT_MS)

        # Chinese page → Chinese widget; the pre-chat form first.
        await page.locator(".cc-launcher").click()
        await expect(page.locator(".cc-title")).to_have_text("在线客服")
        await expect(page.locator(".cc-status")).to_have_text("客服在线")
        await expect(page.locator(".cc-prechat")).to_be_visible()
        await page.locator(".cc-name").fill("张伟")
        await page.locator(".cc-email").fill("zhang.wei@example.cn")
        await page.locator(".cc-start").click()
        await expect(page.locator(".cc-prechat")).to_be_hidden()
        composer = page.locator(".cc-input")
        await expect(composer).to_have_attribute("placeholder", "请输入消息…")

        # The visitor writes; the message reaches the agent side.
        message = "你好，我昨天买的耳机没有声音，可以换货吗？"
        await composer.fill(message)
        await composer.press("Enter")
        mine = page.locator(".cc-visitor", has_text=message)
        await expect(mine).to_have_attribute("data-acked", "true")
        inbound = await wait_for_inbound(sqlite_db, message)
        visitor_id = await page.evaluate("window.ccWebchat.visitorId")
        assert inbound.external_id is not None and inbound.external_id.startswith(
            f"webchat:{visitor_id}:")
        cookies = {c["name"]: c["value"] for c in await context.cookies(running.shop_url)}
        assert cookies["cc_visitor"] == visitor_id
        async with sqlite_db.sessions() as session:
            customer = await session.get(Customer, inbound.customer_id)
        assert customer is not None and customer.display_name == "张伟"

        # The agent types: the widget shows it.
        await running.engine.events.publish([agent_typing(visitor_id, "王芳")])
        typing = page.locator(".cc-typing")
        await expect(typing).to_be_visible()
        await expect(typing).to_contain_text("王芳")
        await expect(typing).to_contain_text("正在输入")

        # With the panel closed, the reply counts as unread.
        await page.locator(".cc-close").click()
        reply = "您好，可以换货。请把订单号发给我，我帮您办理。"
        outbox = await agent_replies(sqlite_db, inbound, reply, agent_id,
                                     SenderHandles(visitor_id=visitor_id))
        badge = page.locator(".cc-badge")
        await expect(badge).to_have_text("1")
        await page.locator(".cc-launcher").click()
        await expect(badge).to_be_hidden()
        answer = page.locator(f'.cc-reply[data-outbox="{outbox.id}"]')
        await expect(answer.locator(".cc-text")).to_have_text(reply)
        await expect(answer.locator(".cc-agent")).to_have_text("王芳")
        await expect(typing).to_be_hidden()

        # Reload: same visitor, the history shows both messages, no form again.
        await page.reload()
        await expect(host).to_have_attribute("data-state", "online", timeout=TIMEOUT_MS)
        await page.locator(".cc-launcher").click()
        await expect(page.locator(".cc-visitor", has_text=message)).to_be_visible()
        again = page.locator(f'.cc-reply[data-outbox="{outbox.id}"]')
        await expect(again.locator(".cc-text")).to_have_text(reply)
        await expect(again.locator(".cc-agent")).to_have_text("王芳")
        await expect(page.locator(".cc-prechat")).to_be_hidden()
        assert await page.evaluate("window.ccWebchat.visitorId") == visitor_id
        await expect(badge).to_be_hidden()
        # Text is text: the page gained no elements from what was typed.
        assert await page.locator(".cc-visitor").count() == 1
        assert errors == []
        await context.close()


async def test_offline_widget_asks_for_email_and_the_answer_goes_by_email(
    sqlite_db: Database, browser: Any
) -> None:
    from playwright.async_api import expect

    agent_id = await add_agent(sqlite_db, "Alice", Availability.OFFLINE)
    async with stack(sqlite_db, "en") as running:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(running.shop_url)
        await expect(page.locator("#cc-webchat")).to_have_attribute(
            "data-state", "offline", timeout=TIMEOUT_MS)
        await page.locator(".cc-launcher").click()
        await expect(page.locator(".cc-title")).to_have_text("Chat with us")
        await expect(page.locator(".cc-notice")).to_contain_text("No agent is online")
        await expect(page.locator(".cc-input")).to_be_hidden()
        await expect(page.locator(".cc-skip")).to_be_hidden()

        await page.locator(".cc-email").fill("not an address")
        await page.locator(".cc-start").click()
        await expect(page.locator(".cc-form-error")).to_contain_text("valid e-mail")
        await page.locator(".cc-email").fill("li.lei@example.com")
        await page.locator(".cc-start").click()
        await expect(page.locator(".cc-notice")).to_contain_text("li.lei@example.com")
        composer = page.locator(".cc-input")
        await expect(composer).to_be_visible()
        text = "Do you deliver on Sundays?"
        await composer.fill(text)
        await page.locator(".cc-send").click()
        await expect(page.locator(".cc-visitor", has_text=text)).to_have_attribute(
            "data-acked", "true")

        inbound = await wait_for_inbound(sqlite_db, text)
        assert inbound.meta["channel"] == {"reply_by_email": True, "language": "en"}
        visitor_id = await page.evaluate("window.ccWebchat.visitorId")
        outbox = await agent_replies(
            sqlite_db, inbound, "Yes, on Sundays too.", agent_id,
            SenderHandles(visitor_id=visitor_id, email="li.lei@example.com"))
        assert outbox.channel == Channel.EMAIL
        await context.close()
