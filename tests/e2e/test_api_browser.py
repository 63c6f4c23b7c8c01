"""The API admin page, the API docs and the landing page in headless Chromium: no
Content-Security-Policy violation, the token is shown once and works, a webhook is
subscribed and its test event queued from the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import AgentRole
from tests.conftest import require_service
from tests.e2e.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS, free_site
from tests.integration.console_support import PASSWORD, add_agent, make_engine

TIMEOUT_MS = 15_000
VIOLATIONS_JS = """() => { window.__csp = [];
  document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); }"""


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium binary (skipped when missing on a developer machine; CI fails)."""
    if not Path(CHROMIUM).exists():
        require_service("Chromium", f"{CHROMIUM} is missing")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    """Headless Chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def test_api_pages_work_under_the_csp(sqlite_db: Database, browser: Any,
                                            tmp_path: Path) -> None:
    from playwright.async_api import expect

    await add_agent(sqlite_db, "root", role=AgentRole.ADMIN)
    app = create_app(Settings(data_dir=tmp_path), sqlite_db, engine=make_engine(sqlite_db))
    runner, port = await free_site(app)
    base = f"http://127.0.0.1:{port}"
    try:
        page = await (await browser.new_context(locale="en-US")).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        console_messages: list[str] = []
        page.on("console", lambda message: console_messages.append(message.text))
        await page.add_init_script(f"({VIOLATIONS_JS})()")

        await page.goto(f"{base}/console/login")
        await page.fill("input[name=login]", "root")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console/inbox")

        await page.goto(f"{base}/console/admin/api")
        await page.fill("form[action$='/tokens'] input[name=name]", "Shop")
        await page.check("input[name=scope][value='customers:read']")
        await page.click("form[action$='/tokens'] button")
        token = (await page.locator("[data-new-token] code").inner_text()).strip()
        assert token.startswith("cct_")
        async with aiohttp.ClientSession() as http, http.get(
                f"{base}/api/v1/customers", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200

        await page.fill("form[action$='/webhooks'] input[name=name]", "ERP")
        await page.fill("form[action$='/webhooks'] input[name=url]", "https://erp.example/h")
        await page.check("input[name=event][value='ticket.created']")
        await page.click("form[action$='/webhooks'] button")
        await expect(page.locator("[data-new-secret]")).to_be_visible()
        await page.click("tr[data-webhook-id] a")
        await page.click("text=Send a test event")
        await expect(page.locator("tr[data-delivery-id]")).to_contain_text("webhook.test")
        assert await page.evaluate("window.__csp") == []

        for path in ("/api/docs", "/"):
            await page.goto(base + path)
            assert await page.evaluate("window.__csp") == [], path
        await expect(page.locator("a[href='/api/docs']")).to_be_visible()
        await page.goto(f"{base}/api/docs")
        await expect(page.locator("#list_customers")).to_contain_text("/api/v1/customers")
        # the style sheet applied (not blocked): operation boxes have a border
        border = await page.locator("section.op").first.evaluate(
            "e => getComputedStyle(e).borderTopStyle")
        assert border == "solid"
        assert not [m for m in console_messages if "Content Security Policy" in m]
    finally:
        await runner.cleanup()
