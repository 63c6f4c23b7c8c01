"""Every link of the console leads somewhere: on the demo data (``make run``), an
administrator and an agent follow the links of every page they can reach, in both
languages, and no link answers with an error. A refusal is a console page too."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from contact_center.demo import (
    DEMO_ADMIN_LOGIN,
    DEMO_ADMIN_PASSWORD,
    DEMO_AGENT_PASSWORD,
    load_demo,
)
from crm_core.db import Database
from crm_core.identity import scan_duplicates
from crm_core.models import CareTask
from crm_core.models.base import utcnow
from crm_core.services.care_tasks import create_task
from crm_core.services.customers import create_customer
from crm_core.services.sales import create_opportunity, move_opportunity, save_stage
from tests.integration.console_support import CSRF_META, add_agent, login, start_client

# Links that end the session, download files or need a customer's signed token.
NOT_FOLLOWED = re.compile(r"/logout|/export|\.csv|\.xlsx|/download|/attachments/|/blobs/")
PAGES_PER_SHAPE = 2
"""Pages of one shape (ids replaced: ``/console/customers/N/edit``) that are opened."""
MOST_PAGES = 300


class _Links(HTMLParser):
    """The ``href`` of every ``<a>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _shape(url: str) -> str:
    parts = urlsplit(url)
    return re.sub(r"\d+", "N", parts.path) + "?" + re.sub(r"=[^&]*", "=", parts.query)


async def crawl(client: TestClient, start: str) -> tuple[int, list[str]]:
    """Open ``start`` and follow same-site console links breadth first; the number of
    pages opened and every link that answered with an error (and where it was)."""
    seen: set[str] = set()
    shapes: dict[str, int] = {}
    broken: list[str] = []
    queue = [(start, "(start)")]
    while queue and len(seen) < MOST_PAGES:
        url, found_on = queue.pop(0)
        shape = _shape(url)
        if url in seen or shapes.get(shape, 0) >= PAGES_PER_SHAPE:
            continue
        seen.add(url)
        shapes[shape] = shapes.get(shape, 0) + 1
        response = await client.get(url)
        if response.status >= 400:
            broken.append(f"{response.status} {url} (linked from {found_on})")
            continue
        if not response.content_type.startswith("text/html"):
            continue
        parser = _Links()
        parser.feed(await response.text())
        for href in parser.hrefs:
            target = urljoin(url, href).split("#")[0]
            parts = urlsplit(target)
            if (parts.scheme in ("", "http", "https") and not parts.netloc) or (
                parts.netloc == f"{client.host}:{client.port}"
            ):
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                if path.startswith("/console") and not NOT_FOLLOWED.search(path):
                    queue.append((path, url))
    return len(seen), broken


@pytest.mark.parametrize(("login", "password", "language"), [
    (DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, "en"),
    (DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, "zh-CN"),
    ("chen.jing", DEMO_AGENT_PASSWORD, "zh-CN"),
])
async def test_no_console_link_is_broken(
    sqlite_db: Database, tmp_path: Path, login: str, password: str, language: str,
) -> None:
    await load_demo(sqlite_db, region="CN")
    await scan_duplicates(sqlite_db)  # as `contact-center demo` does: the review queue
    client = await start_client(sqlite_db, tmp_path)
    try:
        response = await client.post("/console/login", data={"login": login,
                                                              "password": password})
        assert response.status == 200, await response.text()
        token = CSRF_META.search(await response.text())
        assert token, "no CSRF token on the page"
        response = await client.post("/console/language", data={
            "language": language, "next": "/console/inbox", "_csrf": token.group(1)})
        assert response.status == 200
        assert ('lang="zh-CN"' if language == "zh-CN" else 'lang="en"') in await response.text()
        pages, broken = await crawl(client, "/console/inbox")
    finally:
        await client.close()
    assert pages > 20, "the crawl hardly started"
    assert broken == [], "\n".join(broken)


async def test_an_agent_sees_the_customers_of_their_deals_and_care_tasks(
    db: Database, tmp_path: Path,
) -> None:
    """The sales and care-task lists link their customers: an agent given a deal or a
    task may open the customer's record while it is open, and not after."""
    agent_id = await add_agent(db, "sales.rep")
    now = utcnow()
    async with db.transaction() as session:
        await save_stage(session, code="talks", name="Talks", probability=0.5)
        await save_stage(session, code="lost", name="Lost", probability=0, outcome="lost")
        dealt = (await create_customer(session, {"display_name": "Deal Customer"},
                                       actor="test", region="CN")).id
        tasked = (await create_customer(session, {"display_name": "Task Customer"},
                                        actor="test", region="CN")).id
        other = (await create_customer(session, {"display_name": "Nobody's"},
                                       actor="test", region="CN")).id
        deal = await create_opportunity(session, customer_id=dealt, title="Renewal",
                                        stage_code="talks", amount="100", now=now,
                                        actor="test", owner_id=agent_id)
        task = await create_task(session, customer_id=tasked, title="Call back", due_at=now,
                                 now=now, actor="test", assignee_id=agent_id)
    client = await start_client(db, tmp_path)
    try:
        await login(client, "sales.rep")

        async def status(customer_id: int) -> int:
            response = await client.get(f"/console/customers/{customer_id}")
            return response.status

        assert (await status(dealt), await status(tasked), await status(other)) == (
            200, 200, 403)
        listed = await client.get("/console/customers")
        assert "Deal Customer" in await listed.text() and "Nobody's" not in await listed.text()
        sales = await client.get("/console/sales")
        assert f'href="/console/customers/{dealt}"' in await sales.text()

        async with db.transaction() as session:
            await move_opportunity(session, deal.id, "lost", now=now, actor="test")
            (await session.get(CareTask, task.id)).status = "done"  # type: ignore[union-attr]
        assert (await status(dealt), await status(tasked)) == (403, 403)
    finally:
        await client.close()


async def test_refusals_are_console_pages_with_a_way_back(db: Database, tmp_path: Path) -> None:
    await add_agent(db, "plain.agent", language="zh-CN")
    async with db.transaction() as session:
        other = (await create_customer(session, {"display_name": "Nobody's"},
                                       actor="test", region="CN")).id
    client = await start_client(db, tmp_path)
    try:
        await login(client, "plain.agent")
        for path, status, reason in (
            (f"/console/customers/{other}/edit", 403, "您没有权限查看此内容。"),
            ("/console/customers/999999/edit", 404, "未找到"),
            ("/console/no-such-page", 404, "未找到"),
        ):
            response = await client.get(path)
            assert response.status == status, path
            assert response.content_type == "text/html"
            text = await response.text()
            assert reason in text and 'href="/console/"' in text and "topbar" in text, path
        # agent.js and JSON callers keep the short answer
        fetched = await client.get(f"/console/customers/{other}/edit",
                                   headers={"X-Requested-With": "fetch"})
        assert fetched.status == 403 and fetched.content_type == "text/plain"
    finally:
        await client.close()
