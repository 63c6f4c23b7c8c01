"""The self-service bot in the web chat widget, in headless Chromium: the menu arrives as
quick-reply buttons, a click sends the choice, the knowledge base answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.demo_knowledge import ARTICLES
from contact_center.settings import Settings, WebchatSettings
from contact_center.webchat import webchat_adapter
from contact_center.worker import dispatch_loop
from crm_core.db import Database
from crm_core.models import BotSession, KnowledgeArticle
from routing.adapters import ChannelRegistry
from routing.bot import BotRuntime
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.events import EventBus
from routing.flows import DEFAULT_FLOWS_PATH
from routing.outbox import OutboxDispatcher
from routing.rules import RuleSet
from tests.e2e import test_webchat_browser as base
from tests.e2e.test_webchat_browser import NO_WAIT, SHOP_PAGE, TIMEOUT_MS, free_site

chromium = base.chromium
browser = base.browser
"""The same Chromium fixtures as the web chat browser test."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def bot_stack(database: Database, *, own_page: bool = False) -> AsyncIterator[str]:
    """A shop page embedding the widget and our app with the bot on the web chat; with
    ``own_page`` our app's own sample page (``/webchat/try``, under its strict CSP)."""
    widget: dict[str, str] = {}

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=SHOP_PAGE.format(lang="en", widget=widget["url"]),
                            content_type="text/html")

    shop = web.Application()
    shop.router.add_get("/", page)
    shop_runner, shop_port = await free_site(shop)
    app_port = _free_port() if own_page else 0
    origin = f"http://127.0.0.1:{app_port if own_page else shop_port}"
    bot = BotRuntime(channels={"webchat": "bot"}, flows_file=DEFAULT_FLOWS_PATH)
    engine = RoutingEngine(database, DatabaseBus(database, NO_WAIT),
                           RoutingConfig(region="CN", rules=RuleSet.default(), bot=bot),
                           EventBus())
    app = create_app(Settings(webchat=WebchatSettings(allowed_origins=[origin],
                                                      presence_cache_seconds=0,
                                                      prechat_form="off")),
                     database, engine=engine)
    app_runner, app_port = await free_site(app, app_port)
    widget["url"] = f"http://127.0.0.1:{app_port}/webchat/widget.js"
    registry = ChannelRegistry()
    registry.register(webchat_adapter(app))
    stop = asyncio.Event()
    background = [
        asyncio.create_task(engine.run("bot-browser", stop, idle_wait=0.05)),
        asyncio.create_task(dispatch_loop(OutboxDispatcher(database, registry, NO_WAIT), stop,
                                          idle_wait=0.05)),
    ]
    try:
        yield f"{origin}/webchat/try?lang=en" if own_page else f"{origin}/"
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await app_runner.cleanup()
        await shop_runner.cleanup()


async def test_quick_replies_drive_the_bot(sqlite_db: Database, browser: Any) -> None:
    from playwright.async_api import expect

    async with sqlite_db.transaction() as session:
        for item in ARTICLES:
            session.add(KnowledgeArticle(language=item["language"], title=item["title"],
                                         questions=item["questions"], keywords=item["keywords"],
                                         answer=item["answer"]))
    async with bot_stack(sqlite_db) as shop_url:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(shop_url)
        await expect(page.locator("#cc-webchat")).to_have_attribute(
            "data-state", "online", timeout=TIMEOUT_MS)
        await page.locator(".cc-launcher").click()
        composer = page.locator(".cc-input")
        await composer.fill("hello")
        await composer.press("Enter")
        buttons = page.locator(".cc-quick .cc-quick-reply")
        await expect(buttons.first).to_have_text("Ask a question")
        assert await buttons.count() == 7
        await buttons.first.click()
        await expect(page.locator(".cc-quick")).to_have_count(0)  # used up
        await expect(page.locator(".cc-visitor", has_text="Ask a question")).to_be_visible()
        await expect(page.locator(".cc-reply", has_text="type your question")).to_be_visible()
        await composer.fill("how long does a refund take?")
        await composer.press("Enter")
        await expect(page.locator(".cc-reply", has_text="refund to the original payment")
                     ).to_be_visible()
        await expect(page.locator(".cc-quick .cc-quick-reply").nth(3)).to_have_text(
            "Talk to an agent")
        async with sqlite_db.sessions() as session:
            row = await session.scalar(select(BotSession))
        assert row is not None and row.outcome == "answered" and row.node == "more"
        assert errors == []
        await context.close()


async def test_the_sample_page_chats_with_the_bot_under_a_strict_csp(
    sqlite_db: Database, browser: Any,
) -> None:
    """``/webchat/try`` (linked from the landing page, for ``make run``): the widget on a
    page whose Content-Security-Policy forbids inline styles is styled and works."""
    from playwright.async_api import expect

    async with bot_stack(sqlite_db, own_page=True) as try_url:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" else None)
        response = await page.goto(try_url)
        assert response is not None
        assert "style-src 'self'" in response.headers["content-security-policy"]
        await expect(page.locator("#cc-webchat")).to_have_attribute(
            "data-state", "online", timeout=TIMEOUT_MS)
        launcher = page.locator(".cc-launcher")
        assert await launcher.evaluate("node => getComputedStyle(node).width") == "56px"
        await launcher.click()
        composer = page.locator(".cc-input")
        await composer.fill("hello")
        await composer.press("Enter")
        await expect(page.locator(".cc-quick .cc-quick-reply").first).to_have_text(
            "Ask a question")
        assert problems == []
        await context.close()
