"""The dashboard and a report in headless Chromium: Chart.js (served from the console's
static files, no CDN) draws every chart from the page's data; screenshots go to
``tests/e2e/artifacts/``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import AgentRole
from crm_core.services.agents import hash_password
from tests.analytics_support import seed
from tests.e2e.test_console_browser import ARTIFACTS, TIMEOUT_MS, browser, chromium
from tests.e2e.test_webchat_browser import free_site
from tests.integration.console_support import PASSWORD, add_agent, make_engine

__all__ = ["browser", "chromium"]  # fixtures shared with the console browser test


async def test_dashboard_and_report_charts_in_the_browser(
    sqlite_db: Database, browser: Any, tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await seed(sqlite_db, password_hash=hash_password(PASSWORD))
    await add_agent(sqlite_db, "boss", role=AgentRole.SUPERVISOR, name="主管")
    app = create_app(Settings(data_dir=tmp_path), sqlite_db, engine=make_engine(sqlite_db))
    runner, port = await free_site(app)
    url = f"http://127.0.0.1:{port}"
    try:
        context = await browser.new_context(viewport={"width": 1280, "height": 1000},
                                            locale="en-US")
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
                if response.status >= 400 and not response.url.endswith("/favicon.ico")
                else None)
        await page.goto(f"{url}/console/login")
        await page.fill("input[name=login]", "boss")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console/**")

        await page.goto(f"{url}/console/reports/dashboard?from=2026-05-20&to=2026-05-20")
        await expect(page.locator("body")).to_have_attribute("data-charts-ready", "1")
        volume = page.locator("canvas[data-chart='0']")
        await expect(volume).to_have_attribute("data-drawn", "3")  # three channels
        assert (await volume.bounding_box())["height"] > 100  # type: ignore[index]
        await expect(page.locator("[data-metric=open_tickets]")).to_have_text("3")
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        await page.goto(f"{url}/console/reports/churn?from=2026-04-01&to=2026-05-31")
        await expect(page.locator("body")).to_have_attribute("data-charts-ready", "1")
        canvases = page.locator("canvas[data-chart]")
        await expect(canvases).to_have_count(3)
        for index in range(3):
            assert await canvases.nth(index).get_attribute("data-drawn") not in (None, "0")
        await expect(page.get_by_test_id("table-reasons")).to_contain_text("price")
        await page.screenshot(path=str(ARTIFACTS / "report-churn.png"), full_page=True)

        # The export link downloads the figures shown.
        async with page.expect_download() as download_info:
            await page.get_by_test_id("export-csv").click()
        download = await download_info.value
        saved = Path(await download.path())
        text = await asyncio.to_thread(saved.read_text, encoding="utf-8-sig")
        assert "2026-05,1,3,2,0.5" in text
        assert errors == []
        await context.close()
    finally:
        await runner.cleanup()
