"""The console's campaign pages (supervisors and admins) and care tasks (everyone)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from contact_center.app import create_app
from contact_center.settings import Settings
from crm_core.db import Database
from crm_core.models import AgentRole, CareTask
from crm_core.services.agents import create_agent
from routing.bus import DatabaseBus
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.rules import RuleSet
from tests.campaign_support import (
    Clock,
    add_customer,
    campaign,
    config_from,
    email_customer,
    scheduler,
    utc,
)

PASSWORD = "correct horse battery"
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def _agent(db: Database, login: str, role: AgentRole) -> int:
    async with db.transaction() as session:
        agent = await create_agent(session, login=login, display_name=login, password=PASSWORD,
                                   actor="test", role=role)
        agent.ui_language = "zh-CN"
        return agent.id


async def _login(client: TestClient, login: str) -> str:
    response = await client.post("/console/login", data={"login": login, "password": PASSWORD},
                                 allow_redirects=False)
    assert response.status == 302, await response.text()
    page = await client.get("/console/care-tasks")
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


@pytest.fixture
async def client(sqlite_db: Database, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The app on SQLite, with one campaign that has sent something."""
    engine = RoutingEngine(sqlite_db, DatabaseBus(sqlite_db),
                           RoutingConfig(region="CN", rules=RuleSet.default()))
    app = create_app(Settings(data_dir=tmp_path), sqlite_db, engine=engine)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_supervisors_see_campaign_results_in_chinese_agents_do_not(
        client: TestClient, sqlite_db: Database) -> None:
    await _agent(sqlite_db, "boss", AgentRole.SUPERVISOR)
    await _agent(sqlite_db, "worker", AgentRole.AGENT)
    for i in range(12):
        await add_customer(sqlite_db, f"客户{i}", **email_customer(f"c{i}@example.cn"))
    await add_customer(sqlite_db, "李娜")
    variants = """
[[campaigns.variants]]
name = "a"
[campaigns.variants.templates.default.zh-CN]
text = "A {{ customer.name }}"
[[campaigns.variants]]
name = "b"
[campaigns.variants.templates.default.zh-CN]
text = "B {{ customer.name }}"
"""
    config = config_from(campaign("notice", '{ kind = "once", at = 2026-05-04T10:00:00+08:00 }',
                                  extra='channels = ["email"]\nholdout_percent = 40',
                                  templates=variants))
    runner = scheduler(sqlite_db, config, Clock(utc(2026, 5, 4, 2, 0)))
    await runner.tick()
    campaign_id = runner.campaign_id("notice")

    await _login(client, "boss")
    listing = await client.get("/console/campaigns")
    html = await listing.text()
    assert listing.status == 200
    assert "关怀活动" in html and f"/console/campaigns/{campaign_id}" in html
    assert "近 30 天满意度" in html
    detail = await client.get(f"/console/campaigns/{campaign_id}")
    text = await detail.text()
    assert detail.status == 200 and "效果评估" in text and "没有可用渠道" in text
    assert "对照组" in text and "A/B 版本" in text
    assert (await client.get("/console/campaigns/999")).status == 404

    await client.post("/console/logout", data={"_csrf": CSRF.search(text).group(1)})
    await _login(client, "worker")
    assert (await client.get("/console/campaigns")).status == 403
    assert (await client.get(f"/console/campaigns/{campaign_id}")).status == 403


async def test_agents_close_their_own_care_tasks(client: TestClient,
                                                 sqlite_db: Database) -> None:
    worker = await _agent(sqlite_db, "worker", AgentRole.AGENT)
    other = await _agent(sqlite_db, "other", AgentRole.AGENT)
    customer = await add_customer(sqlite_db, "于海")
    async with sqlite_db.transaction() as session:
        mine = CareTask(customer_id=customer, assignee_id=worker, title="回访 于海",
                        due_at=utc(2026, 5, 4, 2, 0), kind="call")
        theirs = CareTask(customer_id=customer, assignee_id=other, title="回访 别人",
                          due_at=utc(2026, 5, 4, 2, 0), kind="call")
        session.add_all([mine, theirs])
    csrf = await _login(client, "worker")
    page = await client.get("/console/care-tasks")
    html = await page.text()
    assert "回访 于海" in html and "回访 别人" not in html and "已逾期" in html
    refused = await client.post(f"/console/care-tasks/{theirs.id}",
                                data={"_csrf": csrf, "outcome": "reached"})
    assert refused.status == 403
    done = await client.post(f"/console/care-tasks/{mine.id}",
                             data={"_csrf": csrf, "outcome": "reached", "note": "客户满意"},
                             allow_redirects=False)
    assert done.status == 302
    async with sqlite_db.sessions() as session:
        row = await session.get_one(CareTask, mine.id)
    assert (row.status, row.outcome, row.outcome_note, row.completed_by) == (
        "done", "reached", "客户满意", "worker")
