"""The reports and sales pages over HTTP: figures on the page, exports that parse back to
the same numbers, an agent limited to their own performance, the follow-up reminder."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook
from sqlalchemy import update

from crm_core.db import Database
from crm_core.models import Agent, AgentRole
from crm_core.services.agents import hash_password
from tests.analytics_support import World, seed
from tests.integration.console_support import PASSWORD, add_agent, login, start_client

MAY = "from=2026-05-01&to=2026-05-31"
TODAY = "from=2026-05-20&to=2026-05-20"


@pytest.fixture
async def world(sqlite_db: Database) -> World:
    world = await seed(sqlite_db, password_hash=hash_password(PASSWORD))
    async with sqlite_db.transaction() as session:
        await session.execute(update(Agent).values(ui_language="en"))
    await add_agent(sqlite_db, "boss", role=AgentRole.SUPERVISOR)
    return world


@pytest.fixture
async def client(sqlite_db: Database, tmp_path: Path, world: World,
                 ) -> AsyncIterator[TestClient]:
    test_client = await start_client(sqlite_db, tmp_path)
    try:
        yield test_client
    finally:
        await test_client.close()


def _csv_tables(text: str) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    for block in text.lstrip("\ufeff").split("\r\n\r\n"):
        rows = list(csv.reader(io.StringIO(block)))
        if rows:
            tables[rows[0][0]] = rows[1:]
    return tables


async def test_dashboard_page_shows_the_figures_and_charts(client: TestClient) -> None:
    await login(client, "boss")
    response = await client.get(f"/console/reports/dashboard?{TODAY}")
    assert response.status == 200
    html = await response.text()
    assert re.search(r'data-metric="open_tickets">3<', html)
    assert re.search(r'data-metric="sla_attainment">40.0%<', html)
    assert re.search(r'data-metric="first_response_p90_min">46.0<', html)
    charts = json.loads(re.search(r'id="report-charts">(.*?)</script>', html, re.S).group(1))
    assert charts[0]["labels"] == ["E-mail", "Telegram", "Web chat"]
    assert charts[0]["datasets"][0]["data"] == [3, 2, 1]
    assert "/console/static/vendor/chart.umd.min.js" in html
    static = await client.get("/console/static/vendor/chart.umd.min.js")
    assert static.status == 200 and "Chart.js v4" in (await static.text())[:200]


async def test_exports_parse_back_to_the_page_numbers(client: TestClient) -> None:
    await login(client, "boss")
    response = await client.get(f"/console/reports/agents/export?{MAY}&format=csv")
    assert response.status == 200
    assert 'filename="agents-2026-05-01-2026-05-31.csv"' in response.headers[
        "Content-Disposition"]
    [header, *rows] = _csv_tables(await response.text())["Agent performance"]
    by_agent = {row[header.index("Agent")]: row for row in rows}
    assert by_agent["Alice"][header.index("Revenue")] == "3700.0"
    assert by_agent["Bob"][header.index("Care tasks done")] == "0"
    response = await client.get(f"/console/reports/sales/export?{MAY}&format=xlsx")
    assert response.status == 200
    book = load_workbook(io.BytesIO(await response.read()))
    summary = dict(list(book["summary"].iter_rows(values_only=True))[1:])
    assert summary["revenue"] == 4800.0 and summary["receivables"] == 3900.0


async def test_an_agent_sees_only_their_own_performance(client: TestClient) -> None:
    await login(client, "a1")
    response = await client.get("/console/reports", allow_redirects=False)
    assert response.headers["Location"] == "/console/reports/agents"
    html = await (await client.get(f"/console/reports/agents?{MAY}")).text()
    assert "Alice" in html and "Bob" not in html
    text = await (await client.get(f"/console/reports/agents/export?{MAY}")).text()
    [header, *rows] = _csv_tables(text)["Agent performance"]
    assert [row[header.index("Agent")] for row in rows] == ["Alice"]
    assert (await client.get(f"/console/reports/rfm?{MAY}")).status == 403
    assert (await client.get(f"/console/reports/dashboard/export?{MAY}")).status == 403


async def test_bad_ranges_are_refused(client: TestClient) -> None:
    await login(client, "boss")
    for query in ("from=2026-05-31&to=2026-05-01", "from=May", "from=2020-01-01&to=2026-01-01",
                  "channel=fax"):
        assert (await client.get(f"/console/reports/dashboard?{query}")).status == 400


async def test_follow_up_reminder_and_recording(client: TestClient, world: World) -> None:
    csrf = await login(client, "a1")
    html = await (await client.get("/console/sales")).text()
    reminders = re.search(r'data-testid="follow-ups-due">(.*?)</table>', html, re.S).group(1)
    assert "张伟" in reminders and "2026-05-20" in reminders
    deals = re.search(r'data-testid="open-deals">(.*?)</table>', html, re.S).group(1)
    assert "deal c1" in deals and "10000.00 CNY" in deals
    response = await client.post("/console/sales/follow-ups", data={
        "_csrf": csrf, "customer_id": str(world.customers["c1"]), "attitude": "positive",
        "note": "回访完成"}, allow_redirects=False)
    assert response.status == 303
    html = await (await client.get("/console/sales")).text()
    assert "No follow-ups due." in html
    response = await client.post("/console/sales/follow-ups", data={
        "_csrf": csrf, "customer_id": str(world.customers["c3"])}, allow_redirects=False)
    assert response.status == 403  # Bob's customer
