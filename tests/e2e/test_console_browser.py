"""The agent console in headless Chromium, against real mail servers.

A customer's mail is delivered to a private Dovecot; the IMAP reader (IDLE) puts it on
the bus, the routing engine makes the ticket, and the agent's inbox shows it live. The
agent opens it with the keyboard, sees the customer card and history, answers; the
outbox dispatcher hands the reply to an aiosmtpd sink. Then: a hostile message renders
inert, the console switches to Chinese, and another team's conversation is refused.
Screenshots of the main screens go to ``tests/e2e/artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from channels.email.imap import ImapMailbox, MailboxConfig
from channels.email.inbound import MailIntake
from channels.email.smtp import SmtpAdapter, SmtpConfig
from contact_center.app import create_app
from contact_center.settings import Settings
from contact_center.worker import dispatch_loop
from crm_core.db import Database
from crm_core.models import AgentRole
from routing.adapters import ChannelRegistry
from routing.blobs import FileBlobStore
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.events import EventBus
from routing.outbox import OutboxDispatcher
from routing.rules import RuleSet
from tests.conftest import Mailbox, require_service
from tests.e2e.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS, free_site
from tests.integration.console_support import PASSWORD, add_agent, add_team, seed_conversation
from tests.mailservers import SmtpSink

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=timedelta(0), lease=timedelta(seconds=30))
TIMEOUT_MS = 20_000
HOSTILE = '<script>alert("xss")</script> 你好 <img src=x onerror=alert(1)>'


def mail(subject: str, body: str, sender: str) -> bytes:
    """A customer's mail as an MDA stores it."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = "support@shop.example"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.cn")
    message.set_content(body)
    return message.as_bytes()


@dataclass
class GatedAdapter:
    """An outbound adapter that sends only while its gate is open (the test decides
    when a reply leaves)."""

    inner: Any
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def channel(self) -> Any:
        """The wrapped adapter's channel."""
        return self.inner.channel

    async def send(self, message: Any) -> str | None:
        """Wait for the gate, then send."""
        await self.gate.wait()
        return cast("str | None", await self.inner.send(message))


@dataclass
class Console:
    """The running app, its URL and what runs behind it."""

    url: str
    app: web.Application
    database: Database
    outbound: GatedAdapter


@contextlib.asynccontextmanager
async def console(database: Database, mailbox: Mailbox, smtp: SmtpSink,
                  data_dir: Path) -> AsyncIterator[Console]:
    """The app on a free port; IMAP intake, routing and the SMTP outbox in the background."""
    engine = RoutingEngine(database, DatabaseBus(database, NO_WAIT),
                           RoutingConfig(region="CN", rules=RuleSet.default()), EventBus())
    app = create_app(Settings(data_dir=data_dir), database, engine=engine)
    runner, port = await free_site(app)
    blobs = FileBlobStore(data_dir / "blobs")
    reader = ImapMailbox(MailboxConfig(
        name="support", host=mailbox.host, port=mailbox.port, security="plain",
        username=mailbox.user, password=mailbox.password, address="support@shop.example",
        idle_seconds=5.0, poll_seconds=0.5), MailIntake(database, blobs, engine.publish), database)
    adapter = SmtpAdapter(SmtpConfig(host=smtp.host, port=smtp.port, security="plain",
                                     from_address="support@shop.example",
                                     from_name="客服中心"), blobs)
    gated = GatedAdapter(adapter)
    gated.gate.set()
    registry = ChannelRegistry()
    registry.register(gated)
    stop = asyncio.Event()
    background = [
        asyncio.create_task(reader.run(stop)),
        asyncio.create_task(engine.run("browser-test", stop, idle_wait=0.05)),
        asyncio.create_task(dispatch_loop(OutboxDispatcher(database, registry, NO_WAIT,
                                                           events=engine.events),
                                          stop, idle_wait=0.05)),
    ]
    try:
        yield Console(f"http://127.0.0.1:{port}", app, database, gated)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*background, return_exceptions=True), 20)
        await adapter.close()
        await runner.cleanup()


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium binary (skipped when missing on a developer machine; CI fails)."""
    if not Path(CHROMIUM).exists():
        require_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    """Headless Chromium, launched as in the web chat browser test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def wait_for_mail(sink: SmtpSink, needle: str, seconds: float = 20) -> Any:
    """The first message handed to the sink whose text contains ``needle``."""
    async with asyncio.timeout(seconds):
        while True:
            for received in sink.messages:
                parsed = email.message_from_bytes(received.content, policy=email.policy.default)
                body = parsed.get_body(("plain",))
                if body is not None and needle in body.get_content():
                    return parsed
            await asyncio.sleep(0.1)


async def test_an_agents_day_in_the_browser(
    sqlite_db: Database, mailbox: Mailbox, smtp_sink: SmtpSink, browser: Any,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    team_x = await add_team(sqlite_db, "售后服务 After-sales")
    team_y = await add_team(sqlite_db, "VIP desk")
    await add_agent(sqlite_db, "li", teams=(team_x,), name="李娜", language="en")
    wang = await add_agent(sqlite_db, "wang", teams=(team_y,), name="王芳")
    await add_agent(sqlite_db, "root", role=AgentRole.ADMIN)
    foreign = await seed_conversation(sqlite_db, name="于先生", email="yu@example.cn",
                                      subject="订座", text="还是老位置。", assignee_id=wang,
                                      team_id=team_y)

    async with console(sqlite_db, mailbox, smtp_sink, tmp_path) as running:
        context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                            locale="en-US")
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                          asyncio.ensure_future(dialog.dismiss())))
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Log in; the inbox's queue is open, its live socket connected.
        await page.goto(f"{running.url}/console/login")
        await page.fill("input[name=login]", "li")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console/inbox")
        await page.goto(f"{running.url}/console/inbox?view=unassigned")
        await expect(page.locator("body")).to_have_attribute("data-live", "on")
        await expect(page.get_by_test_id("inbox-empty")).to_be_visible()

        # A mail arrives: IMAP IDLE → bus → routing → event → the row appears by itself.
        mailbox.deliver(mail("发票抬头错了", "你好，我的发票抬头写错了，请帮忙重开。\n张伟",
                             "张伟 <zhang.wei@example.cn>"))
        row = page.locator("tr[data-row]", has_text="张伟")
        await expect(row).to_be_visible()
        await expect(page.get_by_test_id("view-unassigned")).to_contain_text("1")
        await page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

        # j selects the first row, Enter opens it: the history and the customer card.
        await page.keyboard.press("j")
        await expect(row).to_have_class("selected")
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/console/conversations/*")
        await expect(page.get_by_test_id("customer-name")).to_have_text("张伟")
        await expect(page.get_by_test_id("customer-card")).to_contain_text("zhang.wei@example.cn")
        await expect(page.get_by_test_id("timeline")).to_contain_text("我的发票抬头写错了")
        await expect(page.locator("body")).to_have_attribute("data-live", "on")

        # r focuses the reply box; the reply leaves through the outbox to the SMTP server.
        await page.keyboard.press("r")
        await expect(page.get_by_test_id("reply-text")).to_be_focused()
        await page.keyboard.type("您好，已为您重新开具发票。")
        running.outbound.gate.clear()  # the reply waits in the outbox for now
        await page.get_by_test_id("send-reply").click()
        await expect(page.get_by_test_id("timeline")).to_contain_text("已为您重新开具发票")
        reply = page.get_by_test_id("timeline-item").filter(has_text="已为您重新开具发票")
        await expect(reply.locator(".badge.outbox-pending, .badge.outbox-sending")).to_be_visible()
        running.outbound.gate.set()
        sent = await wait_for_mail(smtp_sink, "已为您重新开具发票")
        assert sent["To"].addresses[0].addr_spec == "zhang.wei@example.cn"
        assert "发票抬头错了" in sent["Subject"]
        # The dispatcher's message.sent event refreshes the timeline: "Sent" without a reload.
        await expect(reply.locator(".badge.outbox-sent")).to_be_visible()
        # n: an internal note, sent with Ctrl+Enter; e: resolve.
        await page.keyboard.press("n")
        await page.keyboard.type("@root 客户要求加急")
        await page.keyboard.press("Control+Enter")
        await expect(page.get_by_test_id("timeline")).to_contain_text("客户要求加急")
        await page.keyboard.press("Escape")
        await page.keyboard.press("?")
        await expect(page.get_by_test_id("shortcut-help")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "conversation.png"), full_page=True)
        await page.keyboard.press("?")
        await page.keyboard.press("e")
        await expect(page.get_by_test_id("ticket-status")).to_have_text("Resolved")

        # A hostile message is shown as text; nothing in it runs.
        mailbox.deliver(mail("<script>alert('subject')</script>", HOSTILE,
                             "Mallory <mallory@example.com>"))
        await page.goto(f"{running.url}/console/inbox?view=unassigned")
        hostile_row = page.locator("tr[data-row]", has_text="Mallory")
        await expect(hostile_row).to_be_visible()
        await hostile_row.locator("a.row-link").click()
        await page.wait_for_url("**/console/conversations/*")
        await expect(page.get_by_test_id("timeline")).to_contain_text('<script>alert("xss")')
        await expect(page.get_by_test_id("timeline")).to_contain_text("onerror=alert(1)")
        assert await page.locator("#timeline script, #timeline img").count() == 0
        await page.wait_for_timeout(500)
        await page.screenshot(path=str(ARTIFACTS / "hostile-message.png"), full_page=True)

        # 中文: the same screen with Chinese labels.
        await page.get_by_test_id("switch-language").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator(".main-nav")).to_contain_text("收件箱")
        await expect(page.get_by_role("heading", name="内部备注")).to_be_visible()
        await expect(page.get_by_test_id("send-reply")).to_have_text("发送")
        await page.goto(f"{running.url}/console/inbox?view=unassigned")
        await expect(page.get_by_test_id("view-mine")).to_contain_text("我的")
        await page.screenshot(path=str(ARTIFACTS / "inbox-zh.png"), full_page=True)
        await page.keyboard.press("j")
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/console/conversations/*")
        await expect(page.get_by_test_id("customer-card")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "conversation-zh.png"), full_page=True)

        # On a tablet the columns stack.
        await page.set_viewport_size({"width": 820, "height": 1180})
        await page.screenshot(path=str(ARTIFACTS / "conversation-tablet.png"), full_page=True)

        # Another team's conversation is refused.
        response = await page.goto(f"{running.url}/console/conversations/"
                                   f"{foreign.conversation_id}")
        assert response is not None and response.status == 403
        await expect(page.locator("body")).to_contain_text("您没有权限查看此内容")
        await page.screenshot(path=str(ARTIFACTS / "refused.png"))

        assert dialogs == [], f"a dialog fired: {dialogs}"
        assert errors == [], f"page errors: {errors}"
        await context.close()
